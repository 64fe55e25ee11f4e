"""The scale-out benchmarks run: the GPU script at a tiny size on CPU (a smoke test; no test needs a GPU)."""
import pytest

pytest.importorskip("transformer_lens")


def test_gpu_script_smoke_on_cpu():
    from benchmarks import gpu
    rows = gpu.bench("tiny-gpt2", "fp32", "cpu", 3, 6, 2, "1GB", 3, with_tl=False)
    methods = {(r["sweep"], r["method"]) for r in rows}
    assert methods == {(s, m) for s in ("head_out", "resid_pre") for m in ("causalinterp", "nnsight_naive")}
    assert all(r["agrees"] for r in rows), rows  # the naive loop computes the same means as our engine
    assert all(r["patched_seq_per_s"] > 0 for r in rows)
    assert "Not yet measured on a GPU" in gpu.to_markdown({"device": "cpu", "tiny": True})
