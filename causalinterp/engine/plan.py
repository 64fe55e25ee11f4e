"""Plan: which (column, prompt) rows go in which forward pass, sized to a memory budget.

A *column* is a group of sites intervened on together in one run: one site per column
for a sweep, all sites in one column for ``joint=True``, a random site set per column for
`beats_random`.  Each (column, prompt) pair is one row of some forward pass; many columns
share a pass by replicating the prompt rows.  Pure Python/numpy: no model runs here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


# Execution order of components inside one block (modules must be visited in this order).
COMPONENT_ORDER = {"resid_pre": 0, "q": 1, "k": 2, "v": 3, "head_out": 4, "attn_out": 5, "resid_mid": 6,
                   "mlp_out": 7, "resid_post": 8}

# On CPU, passes much larger than this are slower per row (cache effects; see NOTES-nnsight.md),
# so the budget-derived pass size is capped there.  On GPU only the budget limits it.
CPU_MAX_ROWS = 128


class BudgetError(MemoryError):
    """The scan cannot fit the memory budget; the message gives the smallest budget that works."""


def parse_bytes(budget) -> int:
    """``"2GB"``, ``"512MiB"``, ``"500 MB"`` or an int number of bytes."""
    if isinstance(budget, (int, float)):
        return int(budget)
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?i?b?)\s*", str(budget).lower())
    if not m:
        raise ValueError(f"memory_budget {budget!r} is not a size; write e.g. '2GB', '512MB' or a number of bytes")
    num, unit = float(m.group(1)), m.group(2).rstrip("b").rstrip("i")
    return int(num * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[unit])


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TB"


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    n_heads: int
    d_model: int
    d_mlp: int
    vocab: int
    bytes_per_value: int


def bytes_per_row(shape: ModelShape, seq_len: int, n_logit_positions: int) -> int:
    """Peak activation memory of one prompt row in an inference-mode forward pass (an upper estimate).

    Live at once: a few residual-width tensors, the MLP hidden layer, attention scores and
    probabilities, and the logits kept for the metric (only at the positions it reads).
    """
    T = seq_len
    per = (8 * T * shape.d_model + 2 * T * shape.d_mlp + 3 * shape.n_heads * T * T
           + 2 * n_logit_positions * shape.vocab)
    return per * shape.bytes_per_value


def cache_bytes(shape: ModelShape, n_prompts: int, seq_len: int, n_cached: int) -> int:
    """Memory for cached source activations (clean and corrupt) of the components a scan needs."""
    return 2 * n_cached * n_prompts * seq_len * shape.d_model * 4


def rows_per_pass(total_rows: int, per_row: int, fixed: int, budget: int, batch_size: int | None,
                  on_cpu: bool) -> int:
    """How many rows one forward pass holds: `batch_size` if given, else what the budget allows."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return min(batch_size, total_rows)
    if fixed + per_row > budget:
        raise BudgetError(f"memory_budget {format_bytes(budget)} is too small for this scan: the cached activations "
                          f"take {format_bytes(fixed)} and one prompt row needs {format_bytes(per_row)}. "
                          f"Use memory_budget='{format_bytes(fixed + per_row)}' or more, or scan fewer prompts/sites.")
    rows = (budget - fixed) // per_row
    if on_cpu:
        rows = min(rows, CPU_MAX_ROWS)
    return int(max(1, min(rows, total_rows)))


def make_rows(n_columns: int, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order: column-major, so a pass holds few distinct columns.  Returns (column, prompt) per row."""
    col = np.repeat(np.arange(n_columns), n_prompts)
    prompt = np.tile(np.arange(n_prompts), n_columns)
    return col, prompt


def chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, total)) for s in range(0, total, size)]
