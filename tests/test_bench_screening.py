"""The screening benchmark runs end to end at its smoke size, and its numbers mean what they say."""
import math

import pytest


def test_screening_benchmark_small():
    pytest.importorskip("transformer_lens")
    from benchmarks import screening as b

    r = b.main(small=True, verbose=False)
    md = b.to_markdown(r)
    assert "prefix reuse" in md and "TransformerLens" in md and "missed" in md
    for row in r["testbeds"] + [r["gpt2"]["agreement"]]:
        for method in b.METHODS:
            a = row[method]
            assert -1 <= a["spearman"] <= 1 and 0 <= a["recall_top_k"] <= 1
            assert a["fe"] < row["exact_fe"] or method == "ig"
        c = row["confirm"]
        assert c["fe_total"] > 0 and 0 <= c["bound"]["missed_upper"] <= c["bound"]["n_rest"]
    induction = r["testbeds"][0]
    assert induction["confirm"]["fe_ratio"] >= 10          # the goal's cost ratio on head_out x every position
    for p in r["gpt2"]["prefix"]:                            # prefix reuse is exact
        assert p["max_abs_diff"] < 1e-4 and math.isfinite(p["reuse_x_floor"])
    diffs = r["gpt2"]["tools"]["max_abs_diff_vs_scan"]
    assert max(diffs.values()) < 1e-3                        # the tools compared equal work
