"""Metrics: a number per prompt read from the next-token logits at one position (``end`` by default).

Examples:
    >>> import causalinterp as ci
    >>> ci.metrics.logit_diff(), ci.metrics.prob(position="end")
    (Metric(kind='logit_diff', position='end'), Metric(kind='prob', position='end'))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .schema import SPEC_CONFIG, Position, check_fields, did_you_mean

KINDS = ("logit_diff", "logprob", "prob", "kl_to_clean", "accuracy")
Kind = Literal["logit_diff", "logprob", "prob", "kl_to_clean", "accuracy"]


class MetricError(ValueError):
    """A metric that cannot be computed on the given data."""


@dataclass(frozen=True)
class Metric:
    """What is measured: `kind` at token `position` (an int or a named position of the data).

    Examples:
        >>> import causalinterp as ci
        >>> ci.Metric("logprob", position="end") == ci.metrics.logprob()
        True
    """

    __pydantic_config__ = SPEC_CONFIG

    kind: Kind
    position: Position = "end"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise MetricError(f"unknown metric {self.kind!r}{did_you_mean(self.kind, KINDS)}; choose one of "
                              f"{', '.join(KINDS)}")
        check_fields(self, MetricError, f"metric {self.kind!r}")
        if self.position == "all":
            raise MetricError(f"metric {self.kind!r}: position 'all' is for sites; a metric reads the next-token "
                              "logits at one position per prompt (e.g. 'end', a named position or an int)")

    @property
    def needs_wrong(self) -> bool:
        return self.kind == "logit_diff"

    def compute(self, logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor | None,
                clean_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Metric per row from ``logits [rows, vocab]`` at the read position; float64 ``[rows]``."""
        logits = logits.double()
        rows = torch.arange(logits.shape[0], device=logits.device)
        if self.kind == "logit_diff":
            if wrong is None:
                raise MetricError("logit_diff needs a wrong answer per prompt: pass wrong=... to the ContrastSet, "
                                  "or use metrics.logprob()")
            out = logits[rows, answer] - logits[rows, wrong]
        elif self.kind == "logprob":
            out = torch.log_softmax(logits, -1)[rows, answer]
        elif self.kind == "prob":
            out = torch.softmax(logits, -1)[rows, answer]
        elif self.kind == "accuracy":
            out = (logits.argmax(-1) == answer).double()
        else:  # kl_to_clean: KL(clean || run)
            ref = torch.log_softmax(clean_logits.double(), -1)
            out = (ref.exp() * (ref - torch.log_softmax(logits, -1))).sum(-1)
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "position": self.position}

    @classmethod
    def from_dict(cls, d) -> "Metric":
        """Inverse of `to_dict` (or a kind name), validated like a file."""
        from .schema import spec_files
        files = spec_files()
        return files.validate(files.MetricSpec, d, MetricError, "metric")


def logit_diff(position: int | str = "end") -> Metric:
    """logit(answer) - logit(wrong): the standard IOI metric."""
    return Metric("logit_diff", position)


def logprob(position: int | str = "end") -> Metric:
    """log p(answer)."""
    return Metric("logprob", position)


def prob(position: int | str = "end") -> Metric:
    """p(answer)."""
    return Metric("prob", position)


def kl_to_clean(position: int | str = "end") -> Metric:
    """KL(p_clean || p_run) of the next-token distribution: 0 on the clean run."""
    return Metric("kl_to_clean", position)


def accuracy(position: int | str = "end") -> Metric:
    """1 if the answer is the top token, else 0."""
    return Metric("accuracy", position)
