"""Sites: where an intervention acts (component, layer, head, token position).

A `Site` is one concrete place.  A `SiteSet` is a declarative description
("every layer x every position of resid_pre") that is resolved against a model
and a contrast set only at scan time, so it can be written before either exists.

Examples:
    >>> import causalinterp as ci
    >>> ci.sites.resid_pre(layers=[0], positions=["IO", "S2"])
    SiteSet(component='resid_pre', layers=(0,), heads=None, positions=('IO', 'S2'), explicit=())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional, Sequence

from .schema import SPEC_CONFIG, NonNegInt, Position, check_fields

COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "q", "k", "v")
HEAD_COMPONENTS = ("head_out", "q", "k", "v")
Component = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "q", "k", "v"]
ALL = "all"  # the position that means "every position at once"


class SiteError(ValueError):
    """A site description that cannot be resolved against the model or the data."""


#: Readers for sites that carry more than a place, by the key that marks their dict (causalinterp.spec.features
#: registers "feature"): `Site.from_dict` hands such a dict to its reader.
SITE_READERS: dict = {}


@dataclass(frozen=True, order=True)
class Site:
    """One place to intervene: `component` at `layer` (and `head`) at token `position`.

    `position` is an int (negative counts from each prompt's end), a named
    position of the contrast set (e.g. ``"end"``, ``"S2"``), or ``"all"``.

    Examples:
        >>> import causalinterp as ci
        >>> ci.Site("head_out", layer=1, head=2, position="end")
        Site(component='head_out', layer=1, head=2, position='end')
    """

    __pydantic_config__ = SPEC_CONFIG

    component: Component
    layer: NonNegInt
    head: Optional[NonNegInt] = None
    position: Position = ALL

    def __post_init__(self):
        if self.component not in COMPONENTS:
            from .schema import did_you_mean
            raise SiteError(f"unknown component {self.component!r}{did_you_mean(self.component, COMPONENTS)}; "
                            f"choose one of {', '.join(COMPONENTS)}")
        check_fields(self, SiteError)
        if self.component in HEAD_COMPONENTS and self.head is None:
            raise SiteError(f"component {self.component!r} needs a head index, e.g. Site({self.component!r}, layer, head)")
        if self.component not in HEAD_COMPONENTS and self.head is not None:
            raise SiteError(f"component {self.component!r} has no heads; use head_out/q/k/v for per-head sites")

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``head_out L9.H6 @end``."""
        head = f".H{self.head}" if self.head is not None else ""
        return f"{self.component} L{self.layer}{head} @{self.position}"

    def to_dict(self) -> dict:
        return {"component": self.component, "layer": self.layer, "head": self.head, "position": self.position}

    @classmethod
    def from_dict(cls, d: dict) -> "Site":
        """Inverse of `to_dict`, validated like a file (unknown keys and wrong types are errors)."""
        for key, reader in SITE_READERS.items():
            if isinstance(d, dict) and key in d:
                return reader(d)
        from .schema import spec_files
        return spec_files().validate(cls, d, SiteError, "site")


def _tuple_or_none(x) -> tuple | None:
    if x is None:
        return None
    if isinstance(x, (int, str)) or not isinstance(x, Iterable):
        return (x,)
    return tuple(x)


def check_distinct(sites: Sequence[Site], data) -> None:
    """Refuse two sites that are the same activations in every prompt of `data` (a `ContrastSet`), e.g.
    position ``"end"`` and ``-1``: they would be tested twice and counted twice in the correction."""
    seen: dict = {}
    for s in sites:
        where = ALL if s.position == ALL else tuple(data.position_index(s.position, i) for i in range(data.n))
        key = (s.component, s.layer, s.head, where, getattr(s, "feature", None))
        if key in seen:
            first = seen[key]
            same = "" if first == s else (f" (position {first.position!r} and {s.position!r} are the same token in "
                                          "every prompt)")
            raise SiteError(f"the site set lists the same site twice: {first.label} and {s.label}{same}; remove one "
                            "(a duplicate would be tested twice and counted twice in the correction)")
        seen[key] = s


@dataclass(frozen=True)
class SiteSet:
    """A declarative set of sites, resolved by `resolve(model, data)` at scan time.

    Either a grid (`component` with `layers`/`heads`/`positions`, ``None`` meaning
    every one, one site each) or an explicit tuple of `Site`s.

    Examples:
        >>> import causalinterp as ci
        >>> ci.sites.head_out(layers=[1], positions="end")            # one site per head of layer 1
        SiteSet(component='head_out', layers=(1,), heads=None, positions=('end',), explicit=())
        >>> ci.SiteSet.from_dict({"component": "mlp_out", "layers": [0, 1]}).layers
        (0, 1)
    """

    component: Optional[Component] = None
    layers: Optional[tuple[NonNegInt, ...]] = None
    heads: Optional[tuple[NonNegInt, ...]] = None
    positions: Optional[tuple[Position, ...]] = None
    explicit: tuple = field(default=())
    # {"prompts": keys, "rule": how} when the explicit sites were chosen from an evaluation (selection.py):
    # a scan of them on those prompts is flagged selected-on-same-data
    selected_on: Optional[dict] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        for i, s in enumerate(self.explicit):
            if not isinstance(s, Site):
                hint = (f"; for heads use ci.sites.heads([{tuple(s)!r}, ...])" if isinstance(s, (tuple, list))
                        and len(s) == 2 else "")
                raise SiteError(f"site {i} is a {type(s).__name__} {s!r}, not a ci.Site: build sites with "
                                f"ci.Site(component, layer, head, position){hint}")
        if self.component is None and not self.explicit:
            raise SiteError("an empty SiteSet: give a component grid or a list of sites")
        if self.component is not None and self.component not in COMPONENTS:
            from .schema import did_you_mean
            raise SiteError(f"unknown component {self.component!r}{did_you_mean(self.component, COMPONENTS)}; "
                            f"choose one of {', '.join(COMPONENTS)}")
        for name in ("layers", "heads", "positions"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, _tuple_or_none(v))
        check_fields(self, SiteError, "sites")
        object.__setattr__(self, "explicit", tuple(self.explicit))

    def resolve(self, n_layers: int, n_heads: int, seq_lens: Sequence[int], named: Iterable[str] = ()) -> tuple[Site, ...]:
        """Concrete sites in column order, checked against the model's size and the data."""
        named = set(named) | {"end", ALL}
        if self.explicit:
            sites = self.explicit
        else:
            layers = self.layers if self.layers is not None else tuple(range(n_layers))
            if self.positions is None:
                if len(set(seq_lens)) > 1:
                    raise SiteError(
                        "positions=None means one site per token position, but the prompts have different lengths "
                        f"({min(seq_lens)}..{max(seq_lens)} tokens); use named positions (e.g. positions=['S2', 'end']) "
                        "or prompts of one length")
                positions = tuple(range(seq_lens[0]))
            else:
                positions = self.positions
            if self.component in HEAD_COMPONENTS:
                heads = self.heads if self.heads is not None else tuple(range(n_heads))
                sites = tuple(Site(self.component, l, h, p) for l in layers for h in heads for p in positions)
            else:
                if self.heads is not None:
                    raise SiteError(f"heads= given for {self.component!r}, which has no heads")
                sites = tuple(Site(self.component, l, None, p) for l in layers for p in positions)
        min_len = min(seq_lens)
        shortest = list(seq_lens).index(min_len)
        for s in sites:
            if not 0 <= s.layer < n_layers:
                raise SiteError(f"{s.label}: layer {s.layer} does not exist; the model has layers 0..{n_layers - 1}")
            if s.head is not None and not 0 <= s.head < n_heads:
                raise SiteError(f"{s.label}: head {s.head} does not exist; the model has heads 0..{n_heads - 1}")
            if isinstance(s.position, str):
                if s.position not in named:
                    raise SiteError(f"{s.label}: unknown named position {s.position!r}; the data has {sorted(named)}")
            elif not -min_len <= s.position < min_len:
                raise SiteError(f"{s.label}: position {s.position} is out of range for prompt {shortest}, which has "
                                f"{min_len} tokens (positions {-min_len}..{min_len - 1} exist in every prompt)")
        return tuple(sites)

    def to_dict(self) -> dict:
        if self.explicit:
            return {"sites": [s.to_dict() for s in self.explicit],
                    **({"selected_on": dict(self.selected_on)} if self.selected_on else {})}
        return {"component": self.component, "layers": _list(self.layers), "heads": _list(self.heads),
                "positions": _list(self.positions)}

    @classmethod
    def from_dict(cls, d: dict) -> "SiteSet":
        """The file form (a grid, ``{sites: [...]}`` or ``{heads: [[l, h], ...]}``), validated like a file."""
        from .schema import spec_files
        files = spec_files()
        return files.validate(files.SitesSpec, d, SiteError, "sites")


def _list(t):
    return None if t is None else list(t)


def _grid(component):
    def make(layers=None, positions=None) -> SiteSet:
        return SiteSet(component, _tuple_or_none(layers), None, _tuple_or_none(positions))
    make.__name__ = component
    make.__doc__ = (f"Sites of `{component}`: one per layer x position (None = every layer / every position; "
                    f"positions may be ints, named positions or 'all').")
    return make


resid_pre = _grid("resid_pre")
resid_mid = _grid("resid_mid")
resid_post = _grid("resid_post")
attn_out = _grid("attn_out")
mlp_out = _grid("mlp_out")


def _head_grid(component):
    def make(layers=None, heads=None, positions=None) -> SiteSet:
        return SiteSet(component, _tuple_or_none(layers), _tuple_or_none(heads), _tuple_or_none(positions))
    make.__name__ = component
    make.__doc__ = f"Per-head `{component}` sites: one per layer x head x position (None = every one)."
    return make


head_out = _head_grid("head_out")
q = _head_grid("q")
k = _head_grid("k")
v = _head_grid("v")


def heads(pairs: Iterable[tuple[int, int]], positions: Position | Sequence[Position] = ALL,
          component: str = "head_out") -> SiteSet:
    """Explicit heads, e.g. ``heads([(9, 9), (9, 6)], positions="end")``; one site per head x position."""
    positions = _tuple_or_none(positions)
    pairs = list(pairs)
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable) or len(tuple(pair)) != 2:
            raise SiteError(f"heads: entry {i} is {pair!r}; give (layer, head) pairs, e.g. heads([(1, 2), (0, 3)])")
    if component not in HEAD_COMPONENTS:
        raise SiteError(f"heads: component {component!r} has no heads; use one of {', '.join(HEAD_COMPONENTS)}")
    return SiteSet(explicit=tuple(Site(component, l, h, p) for l, h in map(tuple, pairs) for p in positions))


def explicit(sites: Iterable[Site]) -> SiteSet:
    """A SiteSet from a list of `Site`s; sites an evaluation chose (`SelectedSites`) keep the prompts they were
    chosen on, so that testing them on those prompts is flagged."""
    chosen = getattr(sites, "selected_on", None)
    return SiteSet(explicit=tuple(sites), selected_on=dict(chosen) if chosen else None)
