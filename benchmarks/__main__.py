"""Run the whole benchmark suite: ``python -m benchmarks [--small] [--only PART ...]``.

Writes benchmarks/RESULTS.md (tables) and benchmarks/results.json (everything, with machine,
versions and seeds).  Each part also runs alone: ``python -m benchmarks.<part> [--small]``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import time
import traceback
from datetime import datetime, timezone

from benchmarks.common import ROOT, machine, versions

PARTS = ["recovery_induction", "recovery_ioi", "features", "paths_circuits", "real_checkpoints", "calibration", "speed",
         "scale", "screening"]


def _section(name: str, md: str) -> str:
    """A part's Markdown between snippet markers, so the documentation includes it by name
    (``--8<-- "benchmarks/RESULTS.md:calibration"``) instead of a copy; the markers are HTML comments."""
    return f"<!-- --8<-- [start:{name}] -->\n{md.rstrip()}\n<!-- --8<-- [end:{name}] -->\n"


def run(parts=PARTS, small: bool = False, write: bool = True) -> dict:
    from causalinterp.result import _plain, write_atomic
    results, sections = {}, []
    t0 = time.perf_counter()
    for name in parts:
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name} ==", flush=True)
        t = time.perf_counter()
        try:
            r = mod.main(small=small)
            sections.append(_section(name, mod.to_markdown(r)))
        except Exception as e:  # noqa: BLE001 - one failing part must not lose the others; it is reported
            r = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            sections.append(_section(name, f"## {name}\n\nFAILED: {r['error']}\n"))
        r["part_seconds"] = time.perf_counter() - t
        results[name] = r
        print(f"   {name}: {r['part_seconds']:.1f} s", flush=True)
    header = {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "small": small,
              "machine": machine(), "versions": versions(), "total_seconds": time.perf_counter() - t0}
    md = ("# causalinterp benchmark results\n\n"
          f"Generated {header['generated']} by `python -m benchmarks{' --small' if small else ''}` in "
          f"{header['total_seconds'] / 60:.1f} min on {header['machine']['cpu']} "
          f"({header['machine']['cpu_count']} cores, {header['machine']['device']}); "
          f"torch {header['versions']['torch']}, nnsight {header['versions']['nnsight']}, "
          f"transformers {header['versions']['transformers']}. Seeds are fixed in each part (see results.json).\n\n"
          + "\n".join(sections))
    out = {**header, "parts": results}
    if write:
        suffix = "_small" if small else ""
        write_atomic(ROOT / "benchmarks" / f"RESULTS{suffix}.md", md)
        write_atomic(ROOT / "benchmarks" / f"results{suffix}.json", json.dumps(_plain(out), indent=1))
    failed = [k for k, v in results.items() if "error" in v]
    if failed:
        print("FAILED parts:", ", ".join(failed))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny sizes: a smoke run in about a minute")
    ap.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    args = ap.parse_args(argv)
    out = run(args.only or PARTS, small=args.small)
    print(f"wrote benchmarks/RESULTS{'_small' if args.small else ''}.md and results{'_small' if args.small else ''}.json")
    return 1 if any("error" in v for v in out["parts"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
