"""`Effects`: the engine's output — the metric for every prompt and every site.

Nothing statistical happens here; averages are computed by `causalinterp.stats`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..spec.sites import Site


@dataclass(frozen=True, eq=False)
class Effects:
    """Per-prompt metric values of a scan.

    values   [n_prompts, n_sites]  metric after intervening at each site (one column per site;
                                    one column in all when ``joint=True``)
    clean    [n_prompts]           metric on the unpatched clean run
    corrupt  [n_prompts]           metric on the unpatched corrupt run
    sites    the sites in column order (for ``joint=True``: all sites of the single column)
    base     [n_prompts]           metric of the run that was intervened on, without intervention
                                    (corrupt for denoising; clean for noising and ablations)
    target   [n_prompts]           where a full effect would take the metric (clean for denoising;
                                    corrupt for noising and ablations)
    clusters [n_prompts] or None   group id per prompt (e.g. IOI template), for cluster bootstrap
    random_values [n_prompts, n_random] or None
                                    joint intervention on random site sets of the same size
                                    (filled by `scan(..., n_random=...)`, used by `claims.beats_random`)

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(16)
        >>> eff = ci.scan(model, data, ci.sites.head_out(layers=[1], positions="end"), progress=False)
        >>> eff.values.shape                                # 16 prompts x 4 heads
        (16, 4)
    """

    values: np.ndarray
    clean: np.ndarray
    corrupt: np.ndarray
    sites: tuple[Site, ...]
    base: np.ndarray
    target: np.ndarray
    joint: bool = False
    intervention: Any = None
    metric: Any = None
    clusters: np.ndarray | None = None
    random_values: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = self.values.shape[0]
        if self.values.ndim != 2:
            raise ValueError(f"values must be [n_prompts, n_sites], got shape {self.values.shape}")
        for name in ("clean", "corrupt", "base", "target"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        n_cols = 1 if self.joint else len(self.sites)
        if self.values.shape[1] != n_cols:
            raise ValueError(f"values has {self.values.shape[1]} columns but {n_cols} were expected from the sites")

    @property
    def n_prompts(self) -> int:
        return self.values.shape[0]

    @property
    def columns(self) -> list[str]:
        """One label per column of `values`."""
        if self.joint:
            return ["joint(" + ", ".join(s.label for s in self.sites) + ")"]
        return [s.label for s in self.sites]

    def to_frame(self) -> pd.DataFrame:
        """Long-form table: one row per (prompt, site) with the clean/corrupt baselines."""
        n, m = self.values.shape
        cols = self.columns
        prompt = np.repeat(np.arange(n), m)
        col = np.tile(np.arange(m), n)
        frame = pd.DataFrame({
            "prompt": prompt,
            "site": [cols[j] for j in col],
            "value": self.values.reshape(-1),
            "clean": self.clean[prompt],
            "corrupt": self.corrupt[prompt],
            "base": self.base[prompt],
        })
        if not self.joint:
            frame["component"] = [self.sites[j].component for j in col]
            frame["layer"] = [self.sites[j].layer for j in col]
            frame["head"] = pd.array([self.sites[j].head for j in col], dtype="Int64")
            frame["position"] = [str(self.sites[j].position) for j in col]
        if self.clusters is not None:
            frame["cluster"] = self.clusters[prompt]
        return frame
