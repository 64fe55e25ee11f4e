"""Path sites: the effect of some senders' intervention that reaches some receivers along the direct residual path.

    ci.sites.path(ci.sites.heads([(0, 1)]), ci.sites.heads([(1, 2)]), via="k")   # prev-token head -> induction k
    ci.sites.path(ci.sites.mlp_out(layers=[0]), "logits")                           # MLP 0's direct effect on logits
    ci.sites.Path(senders=(...), receivers=(...))                                   # set -> set in one column

A `Path` is one column of a scan: its senders (heads, attention/MLP outputs, or the residual stream at a
layer and position) are intervened on, every other component is held at the base run, and the change
they make to the residual stream reaches only the receivers:

* a head receiver through ``q``, ``k`` or ``v`` (a `Site` of that component): that projection's input is
  recomputed from the base residual plus the senders' change; the rest of the receiver is the base run;
* an MLP receiver (``Site("mlp_out", layer)``): the MLP's output recomputed from its patched input;
* ``"logits"``: the final residual plus the senders' change, through the final norm and unembedding.

The receivers' new values are then written into the base run, which runs on from them (downstream
components react freely).  docs/paths.md states the semantics exactly.  `path()` makes one `Path` per
(sender, receiver) pair -- an edge -- so a scan of a `PathSet` tests every edge (many per forward pass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .sites import ALL, HEAD_COMPONENTS, Site, SiteError, SiteSet

LOGITS = "logits"
SENDER_COMPONENTS = ("head_out", "attn_out", "mlp_out", "resid_pre", "resid_mid", "resid_post")
RECEIVER_COMPONENTS = ("q", "k", "v", "mlp_out")


def _sites(x, what: str) -> tuple:
    """A tuple of Sites (or the still-unresolved SiteSet) from a Site, a SiteSet or a list of Sites."""
    if isinstance(x, Site):
        return (x,)
    if isinstance(x, SiteSet):
        return x.explicit if x.explicit else x
    if isinstance(x, (str, bytes)):
        raise SiteError(f"path {what}: {x!r} is not a site; give ci.Site(...)s or a ci.sites.* set"
                        + (" ('logits' is a receiver, not a sender)" if x == LOGITS else ""))
    items = tuple(x)
    for i, s in enumerate(items):
        if not isinstance(s, Site):
            raise SiteError(f"path {what}: entry {i} is {s!r}, not a ci.Site")
    return items


@dataclass(frozen=True)
class Path:
    """One path site: `senders` (Sites) -> `receivers` (Sites of q/k/v/mlp_out, or ``"logits"``).

    Used as a column of `ci.scan` like any `Site`: the metric per prompt after the senders' effect
    reaches the receivers only along the direct residual path (see the module docstring).

    Examples:
        >>> import causalinterp as ci
        >>> p = ci.sites.Path((ci.Site("head_out", 0, 1),), (ci.Site("k", 1, 2),))
        >>> p.label
        'path(head_out L0.H1 @all -> k L1.H2 @all)'
    """

    senders: tuple
    receivers: tuple

    def __post_init__(self):
        senders = _sites(self.senders, "senders")
        if isinstance(self.receivers, str):
            receivers = (self.receivers,)
        else:
            receivers = tuple(self.receivers)
        if not senders or not receivers:
            raise SiteError("a path needs at least one sender and one receiver")
        for s in senders:
            if s.component not in SENDER_COMPONENTS:
                raise SiteError(f"path sender {s.label}: senders are {', '.join(SENDER_COMPONENTS)} sites "
                                f"(for a head use its head_out site, e.g. ci.Site('head_out', {s.layer}, {s.head}))")
        for r in receivers:
            if r == LOGITS:
                continue
            if not isinstance(r, Site) or r.component not in RECEIVER_COMPONENTS:
                label = r.label if isinstance(r, Site) else repr(r)
                raise SiteError(f"path receiver {label}: receivers are heads through q, k or v (Site('q'|'k'|'v', "
                                "layer, head), or heads with via=...), MLPs (Site('mlp_out', layer)) or 'logits'")
        if LOGITS in receivers and len(receivers) > 1:
            raise SiteError("a path cannot send to 'logits' and to other receivers at once: the direct path to the "
                            "logits bypasses every later component; make them separate paths")
        if len(set(senders)) != len(senders) or len(set(receivers)) != len(receivers):
            raise SiteError("a path lists the same sender or receiver twice")
        object.__setattr__(self, "senders", tuple(senders))
        object.__setattr__(self, "receivers", receivers)

    # Site-like fields, so tables and plots treat a path as a site
    component = "path"
    head = None

    @property
    def layer(self) -> int | None:
        """The lowest receiver layer (None for 'logits')."""
        layers = [r.layer for r in self.receivers if isinstance(r, Site)]
        return min(layers) if layers else None

    @property
    def position(self) -> str:
        return ",".join(sorted({str(s.position) for s in self.senders}))

    @property
    def label(self) -> str:
        def one(x):
            return x if isinstance(x, str) else x.label
        return f"path({' + '.join(map(one, self.senders))} -> {' + '.join(map(one, self.receivers))})"

    def to_dict(self) -> dict:
        return {"component": "path", "senders": [s.to_dict() for s in self.senders],
                "receivers": [r if isinstance(r, str) else r.to_dict() for r in self.receivers]}

    @classmethod
    def from_dict(cls, d: dict) -> "Path":
        recv = tuple(r if isinstance(r, str) else Site.from_dict(r) for r in d["receivers"])
        return cls(tuple(Site.from_dict(s) for s in d["senders"]), recv)

    def merged(self, other: "Path") -> "Path":
        """One path with the senders and receivers of both (for ``scan(..., joint=True)``)."""
        return Path(tuple(dict.fromkeys(self.senders + other.senders)),
                    tuple(dict.fromkeys(self.receivers + other.receivers)))


@dataclass(frozen=True)
class PathSet:
    """Paths to resolve against a model and data at scan time: every (sender, receiver) pair, or explicit paths."""

    senders: object = ()
    receivers: object = ()
    via: str | None = None
    explicit: tuple = ()

    def resolve(self, n_layers: int, n_heads: int, seq_lens: Sequence[int], named: Iterable[str] = ()) -> tuple:
        """Concrete `Path`s (one per sender x receiver pair), checked against the model and data."""
        named = tuple(named)
        if self.explicit:
            paths = self.explicit
        else:
            senders = _resolve(self.senders, n_layers, n_heads, seq_lens, named)
            receivers = _receivers(self.receivers, self.via, n_layers, n_heads, seq_lens, named)
            paths = tuple(Path((s,), (r,)) for s in senders for r in receivers)
        for p in paths:
            SiteSet(explicit=p.senders).resolve(n_layers, n_heads, seq_lens, named)
            recv = tuple(r for r in p.receivers if isinstance(r, Site))
            if recv:
                SiteSet(explicit=recv).resolve(n_layers, n_heads, seq_lens, named)
        if not paths:
            raise SiteError("the path set is empty")
        return paths


    def to_dict(self) -> dict:
        """The hypothesis-file form: ``{path: {senders, receivers, via}}`` or ``{paths: [{senders, receivers}]}``."""
        if self.explicit:
            return {"paths": [{"senders": _sites_dict(p.senders), "receivers": _sites_dict(p.receivers)}
                              for p in self.explicit]}
        return {"path": {"senders": _sites_dict(self.senders), "receivers": _sites_dict(self.receivers),
                         **({"via": self.via} if self.via is not None else {})}}

    @classmethod
    def from_dict(cls, d: dict) -> "PathSet":
        """Inverse of `to_dict`, validated like a hypothesis file's ``sites:``."""
        from .schema import spec_files
        files = spec_files()
        out = files.validate(files.HypothesisSitesSpec, d, SiteError, "sites")
        if not isinstance(out, PathSet):
            raise SiteError("sites: expected path sites ({path: {senders, receivers, via}} or {paths: [...]})")
        return out


def _sites_dict(x):
    """The file form of senders or receivers: a SiteSet's own form, ``{sites: [...]}`` or ``"logits"``."""
    if isinstance(x, str):
        return x
    if isinstance(x, SiteSet):
        return x.to_dict()
    if isinstance(x, Site):
        return {"sites": [x.to_dict()]}
    items = tuple(x)
    if items == (LOGITS,):
        return LOGITS
    if items and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in items):  # [(layer, head)] receivers
        return {"heads": [[int(l), int(h)] for l, h in items]}
    return {"sites": [s.to_dict() for s in items]}


def _resolve(x, n_layers, n_heads, seq_lens, named) -> tuple:
    x = _sites(x, "senders")
    if isinstance(x, SiteSet):
        return x.resolve(n_layers, n_heads, seq_lens, named)
    return tuple(x)


def _receivers(x, via, n_layers, n_heads, seq_lens, named) -> tuple:
    if isinstance(x, str):
        if x != LOGITS:
            raise SiteError(f"receivers={x!r}: the only named receiver is 'logits'")
        if via is not None:
            raise SiteError("via= applies to head receivers, not to 'logits'")
        return (LOGITS,)
    if isinstance(x, (list, tuple)) and x and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in x):
        x = SiteSet(explicit=tuple(Site("head_out", int(l), int(h)) for l, h in x))
    sites = _resolve(_sites(x, "receivers"), n_layers, n_heads, seq_lens, named)
    out = []
    for s in sites:
        if s.component == "head_out":
            if via not in ("q", "k", "v"):
                raise SiteError(f"receiver {s.label}: a head receives through its query, key or value input; pass "
                                "via='q', 'k' or 'v'")
            s = Site(via, s.layer, s.head, s.position)
        elif via is not None and s.component != via:
            raise SiteError(f"receiver {s.label}: via={via!r} applies to head_out receivers (or give q/k/v sites)")
        out.append(s)
    return tuple(out)


def path(senders, receivers, via: str | None = None) -> PathSet:
    """Path sites from each sender to each receiver (one column per pair).

    senders: Sites or a site set of head_out / attn_out / mlp_out / resid_* (a position picks where the
    sender is intervened on).  receivers: ``"logits"``, q/k/v or mlp_out sites, head_out sites or
    ``[(layer, head), ...]`` with ``via="q" | "k" | "v"``.  A receiver's position is where its recomputed
    input is written (default every position).

    Examples:
        >>> import causalinterp as ci
        >>> ps = ci.sites.path(ci.sites.heads([(0, 1), (0, 3)]), [(1, 2)], via="k")
        >>> [p.label for p in ps.resolve(2, 4, [8])]
        ['path(head_out L0.H1 @all -> k L1.H2 @all)', 'path(head_out L0.H3 @all -> k L1.H2 @all)']
    """
    if via is not None and via not in ("q", "k", "v"):
        raise SiteError(f"via must be 'q', 'k' or 'v' (the head input the path acts through), got {via!r}")
    given = _sites(senders, "senders")
    comps = {given.component} if isinstance(given, SiteSet) else {s.component for s in given}
    for c in sorted(comps - set(SENDER_COMPONENTS)):
        raise SiteError(f"path senders: {c!r} sites cannot send; senders are {', '.join(SENDER_COMPONENTS)} sites "
                        "(for a head use head_out)")
    return PathSet(senders, receivers, via)


def paths(items: Iterable[Path]) -> PathSet:
    """A PathSet from explicit `Path`s (each one column; a Path may have several senders/receivers)."""
    items = tuple(items)
    for i, p in enumerate(items):
        if not isinstance(p, Path):
            raise SiteError(f"paths: entry {i} is {p!r}, not a ci.sites.Path")
    return PathSet(explicit=items)


def is_path_spec(x) -> bool:
    """True if `x` describes path sites (a Path, a PathSet, or a list of Paths)."""
    if isinstance(x, (Path, PathSet)):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(p, Path) for p in x)


__all__ = ["ALL", "HEAD_COMPONENTS", "LOGITS", "Path", "PathSet", "path", "paths", "is_path_spec"]
