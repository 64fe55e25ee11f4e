"""Feature sites: a linear subspace of an activation, or chosen latents of a sparse autoencoder (SAE).

A feature site is a `Site` (component, layer, head, position) that carries a `Feature`: the engine reads the
activation the patched run has at that place, edits only the feature's part of it and writes the result back.

`Subspace(basis)`  rows of `basis` are k orthonormal directions (a probe direction, a PCA basis, a DAS rotation);
    the edit replaces the activation's projection on their span:  new = cur + (src - cur) B^T B.  The full
    basis (k = d) is the whole-activation patch; the empty basis (k = 0) changes nothing.
`SAEFeatures(sae, features, error)`  latents z = sae.encode(x) with error term e = x - sae.decode(z); the edit
    takes the chosen latents from the source:  new = cur + decode(z_new) - decode(z_cur) [+ e_src - e_cur when
    `error`].  No features and no error changes nothing; every feature with the error term is the whole patch.

What the "source" is follows the intervention: another run's activation (patch, resample), zero (zero ablation:
the subspace component, or the chosen latents and the error term, set to zero) or the mean over reference
prompts (mean ablation: the mean projection, or the mean latents and mean error term).

Examples:
    >>> import torch, causalinterp as ci
    >>> s = ci.sites.subspace("resid_pre", 1, "end", torch.eye(64)[:2])
    >>> s.explicit[0].label
    'resid_pre L1 @end [subspace k=2]'
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from .sites import ALL, HEAD_COMPONENTS, Site, SiteError, SiteSet, _tuple_or_none

__all__ = ["Feature", "FeatureError", "FeatureSite", "SAEFeatures", "Subspace", "orthonormalize", "sae_features",
           "subspace", "register_sae_loader"]

#: components an SAE can be attached to (what SAELens calls hook points; heads are not supported)
SAE_COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
_TL_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
             "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out"}
_SAE_LOADERS: list[Callable] = []


class FeatureError(SiteError):
    """A feature site that cannot be built or applied (a basis that is not orthonormal, a wrong width, ...)."""


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
    return h.hexdigest()[:16]


def orthonormalize(vectors) -> torch.Tensor:
    """Rows spanning the same space as the rows of `vectors`, orthonormal (QR; float32).  Raises on rank loss.

    Examples:
        >>> import torch, causalinterp as ci
        >>> B = ci.features.orthonormalize(torch.tensor([[1.0, 1.0, 0.0]]))
        >>> [round(x, 4) for x in B[0].tolist()]
        [0.7071, 0.7071, 0.0]
    """
    v = torch.as_tensor(np.asarray(vectors, dtype=np.float64) if not isinstance(vectors, torch.Tensor)
                        else vectors.detach().double())
    if v.ndim == 1:
        v = v[None]
    if v.shape[0] == 0:
        return v.float()
    q, r = torch.linalg.qr(v.T)
    diag = r.diagonal().abs()
    if diag.min() <= 1e-8 * max(float(diag.max()), 1e-30):
        raise FeatureError(f"orthonormalize: the {v.shape[0]} vectors are linearly dependent (rank < {v.shape[0]}); "
                           "drop the redundant ones")
    return (q.T * torch.sign(r.diagonal())[:, None]).float()


class Feature:
    """What a feature site edits.  Subclasses define `lift`, `edit`, `width`, `label`, `to_dict` and `key`."""

    key: str

    def __eq__(self, other):
        return type(other) is type(self) and other.key == self.key

    def __hash__(self):
        return hash((type(self).__name__, self.key))

    def __lt__(self, other):
        return (type(self).__name__, self.key) < (type(other).__name__, other.key)

    def lift(self, acts: torch.Tensor) -> torch.Tensor:
        """The representation in which reference means are taken (mean ablation)."""
        return acts

    def check(self, width: int, where: str) -> None:
        if self.width is not None and self.width != width:
            raise FeatureError(f"{where}: the {self.label} acts on vectors of width {self.width}, but the activation "
                               f"there has width {width}")


class Subspace(Feature):
    """The span of the rows of `basis` ([k, d], orthonormal; a 1-D tensor is one direction).

    Orthonormality is checked (|B B^T - I| <= `atol`); use `orthonormalize(vectors)` to make a basis.

    Examples:
        >>> import torch, causalinterp as ci
        >>> ci.features.Subspace(torch.eye(4)[:1]).dim
        1
        >>> try:
        ...     ci.features.Subspace(torch.tensor([[1.0, 1.0]]))
        ... except ci.features.FeatureError as e:
        ...     print(str(e)[:40])
        subspace basis: the rows are not orthono
    """

    def __init__(self, basis, name: str | None = None, *, atol: float = 1e-4):
        b = basis.detach().cpu() if isinstance(basis, torch.Tensor) else torch.as_tensor(np.asarray(basis, dtype=np.float64))
        if b.ndim == 1:
            b = b[None]
        if b.ndim != 2:
            raise FeatureError(f"subspace basis: expected a [k, d] matrix (k directions of width d), got shape "
                               f"{tuple(b.shape)}")
        if not torch.isfinite(b).all():
            raise FeatureError("subspace basis: contains NaN or infinite values")
        k, d = b.shape
        if k > d:
            raise FeatureError(f"subspace basis: {k} directions in {d} dimensions cannot be orthonormal")
        gram = b.double() @ b.double().T
        dev = float((gram - torch.eye(k, dtype=torch.float64)).abs().max()) if k else 0.0
        if dev > atol:
            raise FeatureError(f"subspace basis: the rows are not orthonormal (|B B^T - I| = {dev:.3g} > {atol}); "
                               "pass ci.features.orthonormalize(vectors) (QR) or normalise a single direction")
        self.basis = b.float().contiguous()
        self.name = name
        self.dim, self.width = k, d
        self.key = _sha(b.double().numpy().tobytes(), tuple(b.shape))

    @property
    def label(self) -> str:
        return f"subspace {self.name + ' ' if self.name else ''}k={self.dim}"

    def edit(self, cur: torch.Tensor, src, how: str) -> torch.Tensor:
        b = self.basis.to(device=cur.device, dtype=cur.dtype)
        target = torch.zeros_like(cur) if how == "zero" else src.to(device=cur.device, dtype=cur.dtype)
        return cur + ((target - cur) @ b.T) @ b

    def to_dict(self) -> dict:
        return {"kind": "subspace", "name": self.name, "basis": self.basis.tolist(), "key": self.key}

    def __repr__(self):
        return f"Subspace(k={self.dim}, d={self.width}{', name=' + repr(self.name) if self.name else ''})"


def _sae_key(sae) -> str:
    """Content hash of an SAE's weights (so stored results are reused only for the same SAE)."""
    tensors = None
    if isinstance(sae, torch.nn.Module):
        tensors = sorted(sae.state_dict().items())
    else:
        names = [n for n in ("W_enc", "b_enc", "W_dec", "b_dec") if isinstance(getattr(sae, n, None), torch.Tensor)]
        if len(names) == 4:
            tensors = [(n, getattr(sae, n)) for n in names]
    if not tensors:
        return _sha("object", id(sae))  # not content-addressable: never shared with another SAE
    return _sha(*[n.encode() + t.detach().cpu().float().numpy().tobytes() for n, t in tensors])


def sae_hook(sae) -> tuple[str | None, int | None]:
    """(component, layer) an SAE reads: `sae.hook` (ours) or SAELens' ``cfg.hook_name`` /
    ``cfg.metadata.hook_name`` in TransformerLens form (``blocks.3.hook_resid_pre``)."""
    hook = getattr(sae, "hook", None)
    if isinstance(hook, tuple) and len(hook) == 2:
        return hook
    cfg = getattr(sae, "cfg", None)
    name = getattr(cfg, "hook_name", None) or getattr(getattr(cfg, "metadata", None), "hook_name", None)
    if isinstance(cfg, dict):
        name = cfg.get("hook_name")
    if isinstance(name, str):
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in _TL_HOOKS:
            return _TL_HOOKS[parts[2]], int(parts[1])
    return None, None


class SAEFeatures(Feature):
    """Latents `features` (None = all) of `sae` (any object with ``encode(x) -> z`` and ``decode(z) -> x``,
    e.g. a SAELens SAE or `causalinterp.features.SparseAutoencoder`), with or without its error term.

    Examples:
        >>> import torch, causalinterp as ci
        >>> sae = ci.features.SparseAutoencoder(8, 16, hook=("resid_pre", 1))
        >>> ci.features.SAEFeatures(sae, [3, 5]).label
        'sae features [3, 5]'
    """

    def __init__(self, sae, features: Sequence[int] | None = None, *, error: bool = False, name: str | None = None):
        if not (callable(getattr(sae, "encode", None)) and callable(getattr(sae, "decode", None))):
            raise FeatureError(f"an SAE must have encode(x) and decode(z) methods; {type(sae).__name__} has not")
        if not isinstance(error, bool):
            raise FeatureError(f"error must be True or False, got {error!r}")
        self.sae = sae
        self.width = _width(sae)
        self.n_latents = _n_latents(sae)
        if features is not None:
            feats = []
            for f in features:
                if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, np.integer)):
                    raise FeatureError(f"feature ids must be integers, got {f!r}")
                if f < 0 or (self.n_latents is not None and f >= self.n_latents):
                    raise FeatureError(f"feature {int(f)} does not exist; the SAE has latents 0..{self.n_latents - 1}")
                feats.append(int(f))
            if len(set(feats)) != len(feats):
                raise FeatureError(f"feature ids repeat: {feats}")
            features = tuple(feats)
        self.features = features
        self.error = error
        self.name = name or getattr(sae, "name", None)
        self.path = getattr(sae, "path", None)
        self.sae_key = _sae_key(sae)
        self.key = _sha(self.sae_key, self.features, self.error)

    @property
    def label(self) -> str:
        what = "all" if self.features is None else (list(self.features) if len(self.features) <= 6
                                                    else f"{len(self.features)} ids")
        return f"sae {'features' if self.features is None or len(self.features) != 1 else 'feature'} " \
               f"{what if not (isinstance(what, list) and len(what) == 1) else what[0]}{' + error' if self.error else ''}"

    def _encode(self, x):
        sae = self.sae
        p = next(iter(sae.parameters()), None) if isinstance(sae, torch.nn.Module) else getattr(sae, "W_enc", None)
        dt = p.dtype if isinstance(p, torch.Tensor) else x.dtype
        dev = p.device if isinstance(p, torch.Tensor) else x.device
        xs = x.to(device=dev, dtype=dt)
        with torch.no_grad():
            z = sae.encode(xs)
            err = xs - sae.decode(z)
        return xs, z, err

    def lift(self, acts: torch.Tensor) -> torch.Tensor:
        _, z, err = self._encode(acts)
        return torch.cat([z.to(acts.dtype), err.to(acts.dtype)], -1).to(acts.device)

    def edit(self, cur: torch.Tensor, src, how: str) -> torch.Tensor:
        xs, z_cur, e_cur = self._encode(cur)
        if how == "zero":
            z_src, e_src = torch.zeros_like(z_cur), torch.zeros_like(e_cur)
        elif how == "mean":  # src is the lifted mean [.., m + d]
            s = src.to(device=z_cur.device, dtype=z_cur.dtype)
            z_src, e_src = s[..., :z_cur.shape[-1]].expand_as(z_cur), s[..., z_cur.shape[-1]:].expand_as(e_cur)
        else:
            _, z_src, e_src = self._encode(src)
        z_new = z_cur.clone()
        if self.features is None:
            z_new = z_src.expand_as(z_cur).clone()
        elif self.features:
            idx = torch.tensor(self.features, device=z_cur.device)
            z_new[..., idx] = z_src.expand_as(z_cur)[..., idx]
        with torch.no_grad():
            delta = self.sae.decode(z_new) - self.sae.decode(z_cur)
        if self.error:
            delta = delta + (e_src.expand_as(e_cur) - e_cur)
        return cur + delta.to(device=cur.device, dtype=cur.dtype)

    def to_dict(self) -> dict:
        return {"kind": "sae", "name": self.name, "path": None if self.path is None else str(self.path),
                "features": None if self.features is None else list(self.features), "error": self.error,
                "key": self.sae_key}

    def __repr__(self):
        return f"SAEFeatures({self.label})"


def _width(sae) -> int | None:
    for attr in ("d_in",):
        for obj in (sae, getattr(sae, "cfg", None)):
            v = getattr(obj, attr, None)
            if isinstance(v, int):
                return v
    w = getattr(sae, "W_dec", None)
    return int(w.shape[-1]) if isinstance(w, torch.Tensor) else None


def _n_latents(sae) -> int | None:
    for obj in (sae, getattr(sae, "cfg", None)):
        v = getattr(obj, "d_sae", None)
        if isinstance(v, int):
            return v
    w = getattr(sae, "W_dec", None)
    return int(w.shape[0]) if isinstance(w, torch.Tensor) else None


@dataclass(frozen=True, eq=True)
class FeatureSite(Site):
    """A `Site` whose intervention edits only `feature` (a `Subspace` or `SAEFeatures`) of the activation.

    Examples:
        >>> import torch, causalinterp as ci
        >>> site = ci.features.FeatureSite("resid_pre", 1, None, "end", ci.features.Subspace(torch.eye(64)[:1]))
        >>> site.label
        'resid_pre L1 @end [subspace k=1]'
    """

    feature: Any = None

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.feature, Feature):
            raise FeatureError(f"a FeatureSite needs a Subspace or SAEFeatures, got {type(self.feature).__name__}")
        if isinstance(self.feature, SAEFeatures) and self.component not in SAE_COMPONENTS:
            raise FeatureError(f"SAE features sit on one of {', '.join(SAE_COMPONENTS)}, not {self.component!r}")

    @property
    def label(self) -> str:
        return f"{Site.label.fget(self)} [{self.feature.label}]"

    def to_dict(self) -> dict:
        return {**Site.to_dict(self), "feature": self.feature.to_dict()}

    def width(self, model) -> int:
        return model.d_head if self.component in HEAD_COMPONENTS else model.d_model


def register_sae_loader(fn: Callable) -> None:
    """`fn(path) -> sae`, used to rebuild SAE feature sites from files (wired by the package)."""
    if fn not in _SAE_LOADERS:
        _SAE_LOADERS.append(fn)


def load_registered_sae(path: str):
    """An SAE from a directory (SAELens layout) or ``testbed:NAME``, through the registered loader."""
    if not _SAE_LOADERS:
        raise FeatureError("no SAE loader registered (import causalinterp)")
    return _SAE_LOADERS[0](path)


def read_basis(path: str) -> torch.Tensor:
    """A basis [k, d] from a ``.npy``, ``.pt`` or ``.json`` file (a list of rows, or a mapping with ``basis``, as
    ``causalinterp das --json`` writes); relative paths from the working directory."""
    from pathlib import Path
    p = Path(path)
    if not p.is_file():
        raise FeatureError(f"basis file {path} does not exist (give rows inline, or a .npy/.pt file)")
    if p.suffix == ".npy":
        return torch.as_tensor(np.load(p, allow_pickle=False))
    if p.suffix == ".pt":
        t = torch.load(p, weights_only=True)
        if not isinstance(t, torch.Tensor):
            raise FeatureError(f"{path}: expected a saved tensor, got {type(t).__name__}")
        return t
    if p.suffix == ".json":
        import json
        d = json.loads(p.read_text())
        rows = d.get("basis") if isinstance(d, dict) else d
        if not isinstance(rows, list):
            raise FeatureError(f"{path}: expected a list of rows or a mapping with 'basis'")
        return torch.as_tensor(np.asarray(rows, dtype=np.float64))
    raise FeatureError(f"basis file {path}: use a .npy, .pt or .json file")


def site_from_dict(d: dict) -> FeatureSite:
    """Inverse of `FeatureSite.to_dict` (a subspace's basis is in the dict; an SAE is reloaded from its path)."""
    d = dict(d)
    f = d.pop("feature")
    place = Site.from_dict(d)
    if not isinstance(f, dict) or f.get("kind") not in ("subspace", "sae"):
        raise FeatureError(f"feature: expected a mapping with kind 'subspace' or 'sae', got {f!r}")
    if f["kind"] == "subspace":
        unknown = set(f) - {"kind", "name", "basis", "key"}
        if unknown or "basis" not in f:
            raise FeatureError(f"subspace feature: needs 'basis' (a list of directions); unknown keys {sorted(unknown)}")
        feat = Subspace(f["basis"], f.get("name"))
    else:
        unknown = set(f) - {"kind", "name", "path", "features", "error", "key"}
        if unknown or not f.get("path"):
            raise FeatureError("sae feature: needs 'path' (a directory saved by ci.features.save_sae or SAELens)"
                               + (f"; unknown keys {sorted(unknown)}" if unknown else "")
                               + ("; an SAE held only in memory cannot be rebuilt from a file" if not f.get("path") else ""))
        feat = SAEFeatures(load_registered_sae(f["path"]), f.get("features"), error=bool(f.get("error", False)),
                           name=f.get("name"))
        if f.get("key") and feat.sae_key != f["key"]:
            raise FeatureError(f"the SAE at {f['path']} is not the one these results were computed with "
                               f"(weights hash {feat.sae_key} != {f['key']})")
    return FeatureSite(place.component, place.layer, place.head, place.position, feat)


def _positions(position) -> tuple:
    p = _tuple_or_none(position)
    if not p:
        raise FeatureError("give at least one position (an int, a named position or 'all')")
    return p


def subspace(component: str, layer: int, position, basis, *, head: int | None = None,
             name: str | None = None) -> SiteSet:
    """Sites that patch only the projection of `component` at `layer` (and `head`) onto the rows of `basis`.

    `basis` is [k, d] with orthonormal rows (checked) or one direction [d]; `position` may be a list (one site
    each).  ``k = d`` is the whole-activation patch; ``k = 0`` changes nothing.

    Examples:
        >>> import torch, causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
        >>> eff = ci.scan(model, data, ci.sites.subspace("resid_pre", 1, "end", torch.eye(64)), progress=False)
        >>> eff.values.shape
        (8, 1)
    """
    feat = basis if isinstance(basis, Subspace) else Subspace(basis, name)
    return SiteSet(explicit=tuple(FeatureSite(component, layer, head, p, feat) for p in _positions(position)))


def sae_features(sae, features: Iterable[int] | None = None, positions=ALL, *, each: bool = False,
                 error: bool = False, component: str | None = None, layer: int | None = None) -> SiteSet:
    """Sites editing latents `features` (None = all) of `sae` at its hook point, one per position.

    The hook point is `sae.hook` or a SAELens ``cfg.hook_name`` (``blocks.L.hook_resid_pre``); `component`/`layer`
    override it.  ``each=True`` gives one site per feature (a sweep to find the features that matter).
    ``error=True`` also takes the SAE's reconstruction error term from the source.

    Examples:
        >>> import causalinterp as ci
        >>> sae = ci.features.SparseAutoencoder(64, 128, hook=("resid_pre", 1))
        >>> len(ci.sites.sae_features(sae, [0, 1, 2], positions="end", each=True).explicit)
        3
    """
    comp, lay = sae_hook(sae)
    comp, lay = component or comp, layer if layer is not None else lay
    if comp is None or lay is None:
        raise FeatureError("the SAE does not say where it reads (no sae.hook and no SAELens cfg.hook_name); "
                           "pass component= and layer=")
    feats = None if features is None else [int(f) for f in features]
    if each:
        if feats is None:
            n = _n_latents(sae)
            if n is None:
                raise FeatureError("each=True with features=None needs the SAE's number of latents (d_sae)")
            feats = list(range(n))
        groups = [[f] for f in feats]
    else:
        groups = [feats]
    return SiteSet(explicit=tuple(FeatureSite(comp, lay, None, p, SAEFeatures(sae, g, error=error))
                                  for g in groups for p in _positions(positions)))
