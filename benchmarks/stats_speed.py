"""Speed of causalinterp.stats against looping scipy.stats over sites.

Full size: 200 prompts x 1,000 sites x 9,999 resamples, for the paired sign-flip permutation test
and the BCa bootstrap CI of the mean.  scipy is run on a subset of the sites (20 by default) and
extrapolated linearly to all sites (scipy handles one site per call; its cost is linear in the
number of sites), which the table says.  Peak memory is measured with tracemalloc (numpy registers
its allocations there) in a separate run from the timing.  causalinterp chunks the resamples to stay
within `max_memory`; the table shows the default budget and a tight one.

    python benchmarks/stats_speed.py            # full size, writes benchmarks/results/stats_speed.json
    python benchmarks/stats_speed.py --small    # seconds; writes benchmarks/results/stats_speed_small.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy
import scipy.stats as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from causalinterp import stats  # noqa: E402
from causalinterp.engine.effects import Effects  # noqa: E402
from causalinterp.evaluate import evaluate  # noqa: E402
from causalinterp.spec import claims  # noqa: E402
from causalinterp.spec.sites import Site  # noqa: E402

MiB = 2 ** 20


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / MiB


def _mean(a, axis):
    return np.mean(a, axis=axis)


def main(small: bool = False, out: str | os.PathLike | None = None, scipy_sites: int | None = None) -> dict:
    """Run the benchmark; return the results dict (also written as JSON to `out`)."""
    if small:
        n, m, B, k = 30, 40, 199, 4
    else:
        n, m, B, k = 200, 1000, 9999, 20
    if scipy_sites is not None:
        k = scipy_sites
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, m)) + np.linspace(0, 0.5, m)
    tight = 32 * MiB if not small else 256 * 1024

    rows = []

    def ours(name, fn):
        t = _timed(fn)
        mem = _peak(fn)
        rows.append({"task": name, "impl": "causalinterp", "sites": m, "seconds": t, "peak_mib": mem,
                     "extrapolated": False})
        return t

    def theirs(name, fn_site):
        t = _timed(lambda: [fn_site(x[:, j]) for j in range(k)])
        mem = _peak(lambda: fn_site(x[:, 0]))
        rows.append({"task": name, "impl": f"scipy loop ({k} sites, x{m / k:g})", "sites": m,
                     "seconds": t * m / k, "peak_mib": mem, "extrapolated": True})
        return t * m / k

    t_perm = ours("permutation", lambda: stats.permutation_test(x, n_resamples=B, seed=0))
    ours("permutation (max_memory tight)",
         lambda: stats.permutation_test(x, n_resamples=B, seed=0, max_memory=tight))
    s_perm = theirs("permutation", lambda col: st.permutation_test(
        (col,), _mean, permutation_type="samples", vectorized=True, n_resamples=B, rng=0))

    t_boot = ours("bootstrap BCa", lambda: stats.bootstrap_ci(x, method="bca", n_resamples=B, seed=0))
    ours("bootstrap BCa (max_memory tight)",
         lambda: stats.bootstrap_ci(x, method="bca", n_resamples=B, seed=0, max_memory=tight))
    s_boot = theirs("bootstrap BCa", lambda col: st.bootstrap(
        (col,), _mean, method="BCa", vectorized=True, n_resamples=B, rng=0))

    corrupt = rng.normal(0, 1, n)
    clean = corrupt + 2.0
    sites = tuple(Site("head_out", j // 20, j % 20) for j in range(m))
    eff = Effects(values=corrupt[:, None] + x, clean=clean, corrupt=corrupt, sites=sites, base=corrupt, target=clean)
    t_eval = ours("evaluate(recovers) all sites",
                  lambda: evaluate(eff, claims.recovers(0.5), n_resamples=B, seed=0))

    result = {
        "benchmark": "stats_speed",
        "small": small,
        "n_prompts": n, "n_sites": m, "n_resamples": B, "scipy_sites_timed": k,
        "note": (f"scipy.stats is looped over {k} of the {m} sites and its time extrapolated linearly "
                 f"(x{m / k:g}); peak memory by tracemalloc (scipy: one site)."),
        "rows": rows,
        "speedup_permutation": s_perm / t_perm,
        "speedup_bootstrap_bca": s_boot / t_boot,
        "evaluate_seconds": t_eval,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__},
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if out is None:
        out = ROOT / "benchmarks" / "results" / ("stats_speed_small.json" if small else "stats_speed.json")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    _print(result)
    return result


def _print(r: dict) -> None:
    print(f"\nstats speed: {r['n_prompts']} prompts x {r['n_sites']} sites x {r['n_resamples']} resamples")
    print(f"{'task':36s} {'implementation':28s} {'seconds':>10s} {'peak MiB':>10s}")
    for row in r["rows"]:
        mark = " *" if row["extrapolated"] else ""
        print(f"{row['task']:36s} {row['impl']:28s} {row['seconds']:10.2f} {row['peak_mib']:10.1f}{mark}")
    print(f"speed-up: permutation x{r['speedup_permutation']:.0f}, BCa bootstrap x{r['speedup_bootstrap_bca']:.0f}")
    print(f"* {r['note']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny size (smoke test)")
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--scipy-sites", type=int, default=None, help="sites to time scipy on (extrapolated)")
    args = ap.parse_args()
    main(small=args.small, out=args.out, scipy_sites=args.scipy_sites)
