"""Build-time pages (mkdocs-gen-files): the API reference, one page per name in `causalinterp.__all__`, and the
CLI reference, the `--help` of every command.

The pages follow the package: a name added to `__all__` gets its page on the next build, and
tests/test_docs.py checks that every one has a docstring with an example.
"""
import inspect

import mkdocs_gen_files

import causalinterp

nav = mkdocs_gen_files.Nav()
rows = []
for name in sorted(causalinterp.__all__, key=str.lower):
    obj = getattr(causalinterp, name)
    kind = "module" if inspect.ismodule(obj) else "class" if inspect.isclass(obj) else "function"
    summary = (inspect.getdoc(obj) or "").strip().splitlines()[0] if inspect.getdoc(obj) else ""
    with mkdocs_gen_files.open(f"api/{name}.md", "w") as f:
        f.write(f"::: causalinterp.{name}\n    options:\n      show_root_heading: true\n"
                f"      show_root_full_path: false\n")
    nav[name] = f"{name}.md"
    rows.append(f"| [`ci.{name}`]({name}.md) | {kind} | {summary.replace('|', '/')} |")

with mkdocs_gen_files.open("api/index.md", "w") as f:
    f.write("# API reference\n\nEvery public name of `import causalinterp as ci` (`ci.__all__`), generated from "
            "the docstrings.\n\n| name | kind | what |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")
with mkdocs_gen_files.open("api/SUMMARY.md", "w") as f:
    f.write("* [Overview](index.md)\n" + "".join(nav.build_literate_nav()))

# The CLI reference: every command's --help as the parser prints it.
from causalinterp.cli import build_parser  # noqa: E402

parser = build_parser()
sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
parts = ["# CLI reference\n\nThe `--help` of `causalinterp` and each of its commands (generated).\n",
         "## causalinterp\n\n```text\n" + parser.format_help().replace("usage: ", "usage: ", 1) + "```\n"]
for cmd, p in sub.choices.items():
    parts.append(f"## causalinterp {cmd}\n\n```text\n{p.format_help()}```\n")
with mkdocs_gen_files.open("howto/cli-reference.md", "w") as f:
    f.write("\n".join(parts))
