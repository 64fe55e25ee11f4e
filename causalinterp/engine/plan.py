"""Plan: which (column, prompt) rows go in which forward pass, sized to a memory budget.

A *column* is a group of sites intervened on together in one run: one site per column
for a sweep, all sites in one column for ``joint=True``, a random site set per column for
`beats_random`.  Each (column, prompt) pair is one row of some forward pass; many columns
share a pass by replicating the prompt rows.  Pure Python/numpy: no model runs here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from ..spec.sites import Site

# Execution order of components inside one block (modules must be visited in this order).
COMPONENT_ORDER = {"resid_pre": 0, "q": 1, "k": 2, "v": 3, "head_out": 4, "attn_out": 5, "resid_mid": 6,
                   "mlp_out": 7, "resid_post": 8}

# On CPU, passes much larger than this are slower per row (cache effects; see NOTES-nnsight.md),
# so the budget-derived pass size is capped there.  On GPU only the budget limits it.
CPU_MAX_ROWS = 128


class BudgetError(MemoryError):
    """The scan cannot fit the memory budget; the message gives the smallest budget that works.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
        >>> try:
        ...     ci.scan(model, data, ci.sites.head_out(), memory_budget="1KB", progress=False)
        ... except ci.BudgetError as e:
        ...     print(type(e).__name__)
        BudgetError
    """


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


# --- work units --------------------------------------------------------------------------------
PLAN_VERSION = 1


def unit_flops(shape: ModelShape, rows: int, seq_len: int, low_layer: int, n_logit_positions: int) -> float:
    """Forward FLOPs of one patched pass: the blocks from `low_layer` up, and the unembedding it reads.

    Per token and block: 2 x (4 d^2 attention projections + 2 d d_mlp MLP) multiply-adds, plus the
    attention scores and mixing (2 x 2 T d).  Blocks below `low_layer` are skipped (cached outputs).
    """
    d, T = shape.d_model, seq_len
    per_token_block = 2 * (4 * d * d + 2 * d * shape.d_mlp) + 4 * T * d
    blocks = shape.n_layers - low_layer
    return float(rows * (T * blocks * per_token_block + 2 * n_logit_positions * d * shape.vocab))


def unit_bytes(shape: ModelShape, rows: int, seq_len: int, low_layer: int, n_logit_positions: int) -> int:
    """Peak activation memory of one pass plus the cached block outputs it feeds in for skipped blocks."""
    skipped = rows * low_layer * seq_len * shape.d_model * 4
    return int(rows * bytes_per_row(shape, seq_len, n_logit_positions) + skipped)


@dataclass(frozen=True)
class Unit:
    """One independent forward pass: rows ``[start, stop)`` of the column-major (column, prompt) order.

    `hash` is content-addressed (the plan's key plus the rows), so a result stored under it is valid
    for any scan that would compute the same numbers, whoever computed it.
    """

    index: int
    hash: str
    start: int
    stop: int
    low_layer: int
    flops: float
    bytes: int

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict:
        return {"index": self.index, "hash": self.hash, "start": self.start, "stop": self.stop,
                "low_layer": self.low_layer, "flops": self.flops, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, d: dict) -> "Unit":
        return cls(int(d["index"]), str(d["hash"]), int(d["start"]), int(d["stop"]), int(d["low_layer"]),
                   float(d["flops"]), int(d["bytes"]))


@dataclass(frozen=True)
class Plan:
    """A scan as pure data: what is computed (content hashes) and how it splits into independent units.

    `key` hashes everything the values depend on (model weights, tokenizer, data, sites, columns,
    intervention, metric); each unit's hash adds its rows.  `sites` lists every site any column uses
    (the scanned sites first, then random-set sites); `columns` lists site indices per column (the
    first `n_main` columns are the scan's own, the rest random site sets).  Serialises to JSON.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
        >>> p = ci.plan(model, data, ci.sites.head_out(layers=[1], positions="end"))
        >>> p.n_main, len(p.units) >= 1
        (4, True)
    """

    key: str
    model: dict
    data_hash: str
    n_prompts: int
    seq_len: int
    sites: tuple
    columns: tuple
    n_main: int
    joint: bool
    n_random: int
    seed: int
    intervention: dict
    metric: dict
    rows_per_pass: int
    base_rows: int
    memory_budget: int
    skip_blocks: bool
    units: tuple
    reuse_prefix: bool = False   # patched passes start at the first patched position (engine/prefix.py)

    @property
    def n_rows(self) -> int:
        return len(self.columns) * self.n_prompts

    @property
    def flops(self) -> float:
        return float(sum(u.flops for u in self.units))

    def to_dict(self) -> dict:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["sites"] = [s.to_dict() for s in self.sites]
        d["columns"] = [list(c) for c in self.columns]
        d["units"] = [u.to_dict() for u in self.units]
        d["version"] = PLAN_VERSION
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        if d.get("version") != PLAN_VERSION:
            raise ValueError(f"plan version {d.get('version')!r} is not {PLAN_VERSION}; re-plan with this version")
        kw = {f: d[f] for f in cls.__dataclass_fields__ if f in d or f != "reuse_prefix"}
        kw["sites"] = tuple(Site.from_dict(s) for s in d["sites"])
        kw["columns"] = tuple(tuple(int(i) for i in c) for c in d["columns"])
        kw["units"] = tuple(Unit.from_dict(u) for u in d["units"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return (f"Plan({len(self.units)} units, {len(self.columns)} columns x {self.n_prompts} prompts, "
                f"{self.rows_per_pass} rows/pass, {self.flops / 1e9:.2f} GFLOP, key={self.key})")
