"""Corruptions that replace the second prompt of a contrast: Gaussian noise on the input embeddings.

`EmbeddingNoise` is pure data (no model runs here): the positions to corrupt, the scale as a multiple of
the embedding standard deviation, and the seed; `draw` makes the noise tensor for a model and data set.
Causal tracing (`causalinterp.tracing.causal_trace`) uses it as its corrupt run (Meng et al. 2022).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EmbeddingNoise", "TracingError"]


class TracingError(ValueError):
    """A causal trace that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class EmbeddingNoise:
    """Gaussian noise on the input embeddings at `positions` (ints or named positions of the data).

    Examples:
        >>> import causalinterp as ci
        >>> noise = ci.EmbeddingNoise(positions=("S1",), scale=3.0, seed=0)    # 3 x the embedding std at S1
        >>> noise.scale
        3.0
    """

    positions: tuple
    scale: float = 3.0
    seed: int = 0
    std: float | None = None    # the noise unit; default: std of the input-embedding matrix

    kind = "embedding_noise"

    def __post_init__(self):
        pos = self.positions
        if isinstance(pos, (str, int)):
            pos = (pos,)
        pos = tuple(pos)
        if not pos:
            raise TracingError("embedding_noise needs positions to corrupt, e.g. positions: [S1] or [1, 2]")
        object.__setattr__(self, "positions", pos)
        if not float(self.scale) > 0:
            raise TracingError(f"scale = {self.scale}: the noise scale must be > 0 (ROME uses 3)")
        if self.std is not None and not float(self.std) > 0:
            raise TracingError(f"std = {self.std} must be > 0 (or None for the embedding matrix's std)")

    def unit(self, model) -> float:
        """The standard deviation the noise is a multiple of."""
        if self.std is not None:
            return float(self.std)
        return float(model.hf.get_input_embeddings().weight.detach().float().std())

    def indices(self, data: "ContrastSet") -> list[list[int]]:
        """The corrupted token indices of each prompt (sorted, duplicates removed)."""
        try:  # data.py imports this module, so its DataError (a ValueError) is caught as such
            return [sorted({data.position_index(p, i) for p in self.positions}) for i in range(data.n)]
        except ValueError as e:
            raise TracingError(f"embedding_noise positions: {e}") from None

    def draw(self, model, data: "ContrastSet") -> torch.Tensor:
        """The noise as ``[n, T_max, d_model]`` (zero outside the corrupted positions); seeded per prompt."""
        d, T = model.d_model, max(data.lengths)
        unit = self.unit(model) * float(self.scale)
        out = torch.zeros(data.n, T, d)
        for i, idx in enumerate(self.indices(data)):
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + i)
            out[i, idx] = torch.randn(len(idx), d, generator=g) * unit
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "positions": list(self.positions), "scale": float(self.scale),
                "seed": int(self.seed), "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingNoise":
        if isinstance(d, EmbeddingNoise):
            return d
        if not isinstance(d, dict):
            raise TracingError(f"a corruption is a mapping like {{kind: embedding_noise, positions: [S1], scale: 3}}, "
                               f"got {d!r}")
        d = dict(d)
        if d.pop("kind", cls.kind) != cls.kind:
            raise TracingError(f"unknown corruption kind; the only one is {cls.kind!r}")
        extra = set(d) - {"positions", "scale", "seed", "std"}
        if extra:
            raise TracingError(f"embedding_noise has no field(s) {sorted(extra)}; its fields are positions, scale, "
                               "seed, std")
        if "positions" not in d:
            raise TracingError("embedding_noise needs positions, e.g. {kind: embedding_noise, positions: [S1]}")
        return cls(tuple(d["positions"]), float(d.get("scale", 3.0)), int(d.get("seed", 0)), d.get("std"))
