"""Command line: `causalinterp demo|sitemap ...` (all commands call the same Python API)."""
from __future__ import annotations

import argparse
import sys


def _demo_model():
    """The shipped induction testbed when present, else a GPT-2-architecture model built from a config."""
    import causalinterp as ci
    try:
        return ci.load_model("testbed:induction")
    except Exception:  # noqa: BLE001 - testbeds not built yet: fall back to random weights
        from transformers import GPT2Config, GPT2LMHeadModel
        return ci.load_model(GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=128)))


def cmd_sitemap(args) -> int:
    import causalinterp as ci
    model = ci.load_model(args.model) if args.model else _demo_model()
    print(model)
    print(model.site_map().to_string(index=False))
    return 0


def cmd_demo(args) -> int:
    return cmd_sitemap(argparse.Namespace(model=None))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="causalinterp", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sitemap", help="load a model and print its canonical sites and the modules they live in")
    s.add_argument("--model", help="hub id, local path or testbed:NAME (default: the shipped induction testbed)")
    s.set_defaults(func=cmd_sitemap)
    d = sub.add_parser("demo", help="the README's main job")
    d.add_argument("--out", default="reports", help="directory for the report")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
