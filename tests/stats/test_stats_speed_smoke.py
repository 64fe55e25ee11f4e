"""The speed benchmark runs at tiny size and reports what it promises."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import stats_speed  # noqa: E402


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    r = stats_speed.main(small=True, out=out)
    saved = json.loads(out.read_text())
    assert saved["speedup_permutation"] == r["speedup_permutation"] > 0
    tasks = {(row["task"], row["impl"].split()[0]) for row in saved["rows"]}
    assert ("permutation", "scipy") in tasks and ("bootstrap BCa", "causalinterp") in tasks
    assert all(row["peak_mib"] > 0 and row["seconds"] > 0 for row in saved["rows"])
    assert "extrapolated" in saved["note"]
