"""``causalinterp init``: a folder of hypothesis tests to start from, written for the user's own model.

`init_project(directory, model)` loads the model, picks a task whose prompts fit its tokenizer and writes

    hyp_<task>.yaml      two hypotheses as data (a setup check that must pass, and a scan of attention layers)
    test_<task>.py       one hypothesis as Python: the data built by the task generator at run time
    README.md            how to run them (pytest, the CLI) and what to edit
    hypothesis.schema.json  the JSON Schema of hypothesis files, for editors (when this version can export it)

The task: the testbed's own task for ``testbed:NAME``; IOI when the tokenizer has enough one-token names
(GPT-2-style BPE); `tasks.name_copy` when made-up names are two tokens (small sentencepiece models such as
stories260K); otherwise induction on repeated random tokens (works for any vocabulary).  The hypotheses name no
circuit: they are places to start, and their verdicts are whatever the model shows.

    >>> from causalinterp.scaffold import init_project
    >>> files = init_project("my_tests", "testbed:induction")   # doctest: +SKIP
    >>> sorted(p.name for p in files)                           # doctest: +SKIP
    ['README.md', 'hyp_induction.yaml', 'test_induction.py']
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["InitError", "Plan", "choose_task", "init_project"]

#: the least number of one-token names for IOI (it draws three distinct names per prompt)
MIN_IOI_NAMES = 8


class InitError(ValueError):
    """`causalinterp init` cannot write the scaffold (existing files, a model it cannot use)."""


@dataclass(frozen=True)
class Plan:
    """What `init_project` writes: the task, the model as the files name it, and the model's shape."""

    task: str            # "ioi" | "induction" | "name_copy"
    model: str           # the model spec written into the files (local paths made absolute)
    n_layers: int
    n_heads: int
    testbed: str | None  # the testbed's name for testbed:NAME models
    why: str             # one line: why this task


def choose_task(model, spec: str) -> tuple[str, str]:
    """(task, why) for a loaded `ci.Model`: a task whose prompts the model's tokenizer can express."""
    from .tasks import single_token_names, two_token_names
    if spec.startswith("testbed:"):
        task = "ioi" if "ioi" in spec else "induction"
        return task, f"the {spec[8:]} testbed was trained on {task}"
    tok = model.tokenizer
    if tok is None:
        return "induction", "the model has no tokenizer: induction draws token ids from its vocabulary"
    names = single_token_names(tok)
    if len(names) >= MIN_IOI_NAMES:
        return "ioi", f"{len(names)} IOI names are one token in this tokenizer"
    groups = two_token_names(tok)
    if groups:
        return "name_copy", (f"only {len(names)} IOI names are one token here, but made-up names are two "
                             f"(e.g. {next(iter(groups.values()))[0]!r}): a name-copying task fits")
    return "induction", "neither IOI names nor made-up two-token names fit this tokenizer: induction on random tokens"


def _model_spec(spec: str) -> str:
    p = Path(spec).expanduser()
    return str(p.resolve()) if not spec.startswith("testbed:") and p.exists() else spec


def plan(spec: str, model=None) -> tuple[Plan, object]:
    """(plan, loaded model): load `spec` (unless a loaded `model` is given) and decide what to write."""
    from .models.load import load_model
    model = model if model is not None else load_model(_model_spec(spec))
    task, why = choose_task(model, spec)
    return Plan(task, _model_spec(spec), model.n_layers, model.n_heads,
                spec[8:] if spec.startswith("testbed:") else None, why), model


# ----------------------------------------------------------------------------- file contents

def _data_call(p: Plan, n: int, seed: int) -> str:
    """Python that builds the contrast set at run time (inside a function that has `model`)."""
    if p.testbed:
        build = "ioi_data" if p.task == "ioi" else "induction_data"
        return f"ci.testbeds.{build}({n}, seed={seed}, tokenizer=model.tokenizer)"
    if p.task == "ioi":
        return f"ci.tasks.ioi(model.tokenizer, {n}, seed={seed})"
    if p.task == "name_copy":
        return f"ci.tasks.name_copy(model.tokenizer, {n}, seed={seed})"
    vocab = "model.tokenizer if model.tokenizer is not None else model.vocab_size"
    return f"ci.tasks.induction({vocab}, {n}, seq_len=10, seed={seed})"


def _flow(x) -> str:
    return json.dumps(x, separators=(", ", ": "))


def _yaml_data(p: Plan, model, n: int, seed: int) -> tuple[str, str]:
    """(the `data:` value, a comment about it) for the YAML file."""
    if p.task in ("ioi", "induction"):
        return _flow({"task": p.task, "n": n, "seed": seed}), f"data: the {p.task} task, built for the model's tokenizer"
    from .tasks import name_copy
    data = name_copy(model.tokenizer, n, seed=seed)
    lines = ["", f"      clean: {_flow([list(r) for r in data.clean])}",
             f"      corrupt: {_flow([list(r) for r in data.corrupt])}",
             f"      answer: {_flow(list(data.answer))}", f"      wrong: {_flow(list(data.wrong))}",
             f"      positions: {{name: {_flow(list(data.positions['name']))}}}"]
    tok = model.tokenizer
    first = tok.decode(list(data.clean[0]))
    note = (f"data: {n} prompts from ci.tasks.name_copy(tokenizer, {n}, seed={seed}) as token ids of THIS model's "
            f"tokenizer\n#   (the first clean prompt reads {first!r}, answer {tok.decode([data.answer[0]])!r}); "
            "regenerate with `causalinterp init`")
    return "\n".join(lines), note


def _check_position(p: Plan) -> str:
    return "[IO, S1, S2]" if p.task == "ioi" else "all"  # the positions where clean and corrupt differ


def hypothesis_yaml(p: Plan, model, n: int = 48, seed: int = 0) -> str:
    data, note = _yaml_data(p, model, n, seed)
    return f"""\
# Hypotheses about {p.model}, written by `causalinterp init` ({p.why}).
#
#   pytest .                                   # each hypothesis is a test: supported passes, refuted fails,
#                                              # null and inconclusive are their own outcomes
#   causalinterp run . --out reports           # the same as an HTML/Markdown report
#
# Edit freely: sites, claims and data are all fields (README.md lists them).
# {note}
model: {p.model}
hypotheses:
  - name: the patch reaches the model (setup check)
    description: >
      Clean and corrupt prompts differ only where the task puts its information. Writing the clean
      layer-0 residual stream into the corrupt run at those positions makes it the clean run, so the
      recovery is 1 (a check of the data and the wiring: if this fails, fix the data first).
    data: &data{"" if data.startswith(chr(10)) else " "}{data}
    sites: {{component: resid_pre, layers: [0], positions: {_check_position(p)}}}
    joint: true
    intervention: denoise
    claim: {{kind: recovers, at_least: 0.9}}

  - name: which layers' attention moves the answer
    description: >
      A scan: replace each layer's attention output at the last position with its value on the corrupt
      prompt (noising) and test whether the logit difference answer - wrong changes; one test per layer,
      Holm-corrected over the {p.n_layers} layers.
    data: *data
    sites: {{component: attn_out, positions: [end]}}
    intervention: noise
    metric: logit_diff
    claim: has_effect
"""


def hypothesis_py(p: Plan, n: int = 48, seed: int = 1) -> str:
    last = p.n_layers - 1
    return f'''\
"""Hypotheses about {p.model} as Python, written by `causalinterp init` ({p.why}).

    pytest .                          # runs every @ci.hypothesis function (and the hyp_*.yaml files)
    pytest . --causal-report reports  # also writes reports/index.html

A hypothesis function returns a ci.Hypothesis; its `model` argument is the loaded ci.Model (use its
tokenizer to build prompts).  Data here comes from a task generator, so it always fits the tokenizer.
"""
import causalinterp as ci

MODEL = {p.model!r}


@ci.hypothesis(model=MODEL)
def test_last_layer_heads_move_the_answer(model):
    """Which heads of the last layer carry the answer to the last position (noising, one test per head)."""
    return ci.Hypothesis(
        name="last-layer heads move the answer",
        data={_data_call(p, n, seed)},
        sites=ci.sites.head_out(layers=[{last}], positions="end"),
        intervention=ci.patch("noise"),
        metric=ci.metrics.logit_diff(),
        claim=ci.claims.has_effect(),
    )


# ---------------------------------------------------------------------------------------------------------
# TEMPLATE (fill in): your own prompts.  Rename to test_..., decorate with @ci.hypothesis(model=MODEL) and
# replace every TODO.  Clean and corrupt prompts of a pair must have the same number of tokens; answers are
# one token each (GPT-2-style tokenizers usually want a leading space, e.g. " Paris").
def my_hypothesis(model):
    data = ci.ContrastSet.from_text(
        model.tokenizer,
        clean=["TODO: The Eiffel Tower is in the city of"],
        corrupt=["TODO: The Colosseum is in the city of"],
        answer=["TODO: the clean answer token"],
        wrong=["TODO: the corrupt answer token"],
    )
    return ci.Hypothesis(name="TODO: what you claim", data=data,
                         sites=ci.sites.resid_pre(layers=[0], positions="all"),
                         claim=ci.claims.recovers(at_least=0.5))
'''


def readme(p: Plan, files: list[str], schema: bool) -> str:
    schema_text = ("`hypothesis.schema.json` describes the YAML fields; editors with a YAML language server "
                   "(e.g. VS Code's YAML extension) read it from the first line of each hyp_*.yaml for completion "
                   "and checks." if schema else
                   "(This version of causalinterp cannot export a JSON Schema of hypothesis files yet; a newer "
                   "one writes `hypothesis.schema.json` here for editors.)")
    rows = "\n".join(f"| `{f}` | {_ROLE.get(_GENERIC.sub('_*', f), '')} |" for f in files)
    return f"""\
# Causal hypothesis tests for {p.model}

Written by `causalinterp init` for this model: {p.why}.

| file | what |
| --- | --- |
{rows}

## Run them

```bash
pytest {{this folder}}                          # supported passes, refuted fails (with the statistics table),
                                              # null and inconclusive are reported as their own outcomes
pytest {{this folder}} --causal-report reports  # also writes reports/index.html
pytest {{this folder}} --causal-strict          # null and inconclusive fail too
causalinterp run {{this folder}} --out reports  # the same without pytest
```

The verdicts are whatever the model shows: these hypotheses name no circuit.  A verdict comes with its
reasons (estimate, confidence interval, corrected p-value, why it is not supported).

## Make them yours

- Change the sites: `{{component: head_out, layers: [3], heads: [1, 5], positions: [end]}}` in YAML,
  `ci.sites.heads([(3, 1), (3, 5)], positions="end")` in Python.  Components: resid_pre, resid_mid,
  resid_post, attn_out, mlp_out, head_out, q, k, v.
- Change the claim: `recovers` (at_least), `has_effect` (direction), `no_effect` (margin), `beats_random`.
- Bring your own prompts: the TEMPLATE at the end of the test file (`ci.ContrastSet.from_text`).
- `causalinterp sitemap --model {p.model}` prints the model's sites and the modules they live in.

{schema_text}
"""


_GENERIC = re.compile(r"_[a-z_]+(?=\.)")  # hyp_name_copy.yaml -> hyp_*.yaml
_ROLE = {"hyp_*.yaml": "hypotheses as data (a setup check and a scan of attention layers)",
         "test_*.py": "one hypothesis as Python, data from the task generator; a TEMPLATE for your own prompts",
         "README.md": "this file", "hypothesis.schema.json": "JSON Schema of hypothesis files (for editors)"}


def _schema_json() -> str | None:
    """The JSON Schema of hypothesis files (what `causalinterp schema` prints), or None where this version of
    causalinterp cannot export it (then the scaffold's README says so)."""
    try:
        from .spec.files import hypothesis_json_schema
    except ImportError:
        return None
    return json.dumps(hypothesis_json_schema(), indent=1)


def init_project(directory, model_spec: str, *, model=None, force: bool = False) -> list[Path]:
    """Write the scaffold for `model_spec` into `directory` (created if missing); returns the files written.

    Refuses to overwrite existing files unless `force`.  `model` may be an already loaded `ci.Model`.
    """
    if not isinstance(model_spec, str) or not model_spec:
        raise InitError("--model: give a hub id, a local path or testbed:NAME")
    p, loaded = plan(model_spec, model)
    stem = p.task
    schema = _schema_json()
    yaml_text = hypothesis_yaml(p, loaded)
    if schema is not None:
        yaml_text = "# yaml-language-server: $schema=hypothesis.schema.json\n" + yaml_text
    contents = {f"hyp_{stem}.yaml": yaml_text, f"test_{stem}.py": hypothesis_py(p)}
    if schema is not None:
        contents["hypothesis.schema.json"] = schema
    contents["README.md"] = readme(p, [*contents, "README.md"], schema is not None)
    out = Path(directory)
    clash = [n for n in contents if (out / n).exists()]
    if clash and not force:
        raise InitError(f"{out}: {', '.join(clash)} already exist(s); choose another folder or pass --force to "
                        "overwrite")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in contents.items():
        (out / name).write_text(text)
        written.append(out / name)
    return written
