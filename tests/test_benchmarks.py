"""Every benchmark part runs at a tiny size and produces what RESULTS.md is built from (so none can rot).

Besides running, each checks a fact the full run reports: the known circuit is found, knocked-out heads
are never significant, calibration rates are probabilities, a missing checkpoint is a clear skip.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(autouse=True)
def results_in_tmp(tmp_path, monkeypatch):
    import benchmarks.common as common
    monkeypatch.setattr(common, "RESULTS", tmp_path)


def test_recovery_induction_small():
    from benchmarks import recovery_induction as b
    r = b.main(small=True)
    last = r["recall_curve"][-1]
    assert last["recall (induction-ko)"] == 1.0  # the known circuit is found at n=16
    assert all(row["family-wise FP rate on KO heads"] == 0 for row in r["recall_curve"])
    assert r["recall_curve"][0]["recall (induction)"] == 0.0  # n=4: smallest p 1/16 > alpha, nothing can pass
    assert "Recall and false positives" in b.to_markdown(r)


def test_recovery_ioi_small():
    from benchmarks import recovery_ioi as b
    r = b.main(small=True)
    assert r["circuit"], "the scan finds at least one head"
    assert 0 < r["faithfulness"]["estimate"] <= 1.5
    assert "Circuit found" in b.to_markdown(r)


def test_calibration_small():
    from benchmarks import calibration as b
    r = b.main(small=True, real=False)
    assert r["rows"] and all(0 <= row["rate"] <= 1 and 0 <= row["floor"] <= 1 for row in r["rows"])
    assert r["cells ok"] == r["cells"], [row for row in r["rows"] if not row["ok"]]
    assert all(0 <= row["power (supported)"] <= 1 for row in r["power"])
    assert "Calibration panel" in b.to_markdown(r)


@pytest.mark.slow
def test_calibration_real_model_small():
    from benchmarks import calibration as b
    r = b.real_model(small=True, B=199)
    if "skipped" in r:
        pytest.skip(r["skipped"])
    assert all(row["ok"] for row in r["rows"]), r["rows"]


def test_real_checkpoints_skip_clearly_offline(monkeypatch):
    from benchmarks import real_checkpoints as b
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = b.main(small=True)
    if "skipped" in r:
        assert "gpt2" in r["skipped"]
        assert "Skipped" in b.to_markdown(r)
    else:  # a machine that has gpt2 cached
        assert r["ioi"] and r["induction"]


def test_suite_runner_writes_both_files(tmp_path, monkeypatch):
    import benchmarks.__main__ as suite
    monkeypatch.setattr(suite, "ROOT", tmp_path)
    (tmp_path / "benchmarks").mkdir()
    out = suite.run(["real_checkpoints"], small=True)
    assert (tmp_path / "benchmarks" / "RESULTS_small.md").read_text().startswith("# causalinterp benchmark results")
    assert (tmp_path / "benchmarks" / "results_small.json").exists()
    assert "real_checkpoints" in out["parts"]


def test_speed_small():
    from benchmarks import speed as b
    r = b.main(small=True)
    md = b.to_markdown(r)
    assert "TransformerLens" in md and "floor" in md

    def find(d, key):  # every value stored under `key`, anywhere in the nested result
        if isinstance(d, dict):
            for k, v in d.items():
                yield from ([v] if k == key else find(v, key))
        elif isinstance(d, list):
            for v in d:
                yield from find(v, key)
    diffs = list(find(r, "max_abs_diff_values"))
    assert diffs and max(diffs) < 1e-3  # the end-to-end comparison compared equal work
