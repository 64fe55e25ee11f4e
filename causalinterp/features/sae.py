"""A minimal sparse autoencoder, its trainer, and files in SAELens' layout.

`SparseAutoencoder` is SAELens' "standard" architecture: ``z = relu((x - b_dec) W_enc + b_enc)``,
``x_hat = z W_dec + b_dec``.  `save_sae` / `load_sae` read and write SAELens' directory layout (``cfg.json``
with ``d_in``, ``d_sae``, ``hook_name``; ``sae_weights.safetensors`` with ``W_enc``, ``b_enc``, ``W_dec``,
``b_dec``), so a SAELens "standard" SAE saved with ``sae.save_model(path)`` loads here without the package.

Why not SAELens itself: ``pip install sae-lens`` (6.54) would downgrade transformer-lens 4.3 -> 3.9 (which the
TransformerLens cross-checks need) and pull nltk/plotly/py2store; feature sites accept any SAELens SAE object
(anything with encode/decode), so installing it is the user's choice.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..spec.features import FeatureError, _TL_HOOKS, sae_hook

_HOOK_NAME = {v: k for k, v in _TL_HOOKS.items()}


class SparseAutoencoder(torch.nn.Module):
    """ReLU SAE with `d_sae` latents on `d_in`-wide activations read at `hook` = (component, layer).

    Examples:
        >>> import torch, causalinterp as ci
        >>> sae = ci.features.SparseAutoencoder(64, 256, hook=("resid_pre", 1), seed=0)
        >>> sae.encode(torch.zeros(2, 64)).shape
        torch.Size([2, 256])
    """

    def __init__(self, d_in: int, d_sae: int, *, hook: tuple[str, int] | None = None, seed: int = 0,
                 name: str | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_sae, d_in, generator=g)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w.clone())
        self.W_enc = torch.nn.Parameter(w.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.d_in, self.d_sae, self.hook, self.name, self.path = d_in, d_sae, hook, name, None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x):
        return self.decode(self.encode(x))

    def __repr__(self):
        return f"SparseAutoencoder(d_in={self.d_in}, d_sae={self.d_sae}, hook={self.hook})"


def train_sae(acts: torch.Tensor, d_sae: int, *, hook: tuple[str, int] | None = None, l1: float = 1e-3,
              steps: int = 2000, batch_size: int = 256, lr: float = 3e-3, seed: int = 0,
              name: str | None = None) -> SparseAutoencoder:
    """Fit a `SparseAutoencoder` to activations [n, d_in] (Adam; MSE + `l1` x sum |z| x ||W_dec rows||).

    Deterministic for a given `seed` on CPU.  The result carries ``.stats`` (fraction of variance explained,
    mean active latents per vector, dead latents) measured on `acts`.

    Examples:
        >>> import torch, causalinterp as ci
        >>> x = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
        >>> sae = ci.features.train_sae(x, 16, steps=200)
        >>> sae.stats["explained_variance"] > 0.5
        True
    """
    acts = torch.as_tensor(acts).float().detach()
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise FeatureError(f"train_sae: expected activations [n >= 2, d], got shape {tuple(acts.shape)}")
    torch.manual_seed(seed)
    sae = SparseAutoencoder(acts.shape[1], d_sae, hook=hook, seed=seed, name=name)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    scale = float(acts.var(0).sum())  # MSE relative to the variance: l1 means the same for any activation scale
    for _ in range(steps):
        batch = acts[torch.randint(0, acts.shape[0], (batch_size,), generator=g)]
        z = sae.encode(batch)
        rec = sae.decode(z)
        loss = ((rec - batch) ** 2).sum(-1).mean() / scale + l1 * (z * sae.W_dec.norm(dim=1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    sae.stats = sae_stats(sae, acts)
    return sae


def sae_stats(sae, acts: torch.Tensor) -> dict:
    """Fraction of variance explained, mean active latents (L0) and dead latents of `sae` on `acts`."""
    with torch.no_grad():
        z = sae.encode(acts)
        rec = sae.decode(z)
    resid = float(((rec - acts) ** 2).sum())
    total = float(((acts - acts.mean(0)) ** 2).sum())
    active = (z > 0)
    return {"explained_variance": 1 - resid / total, "l0": float(active.sum(-1).float().mean()),
            "dead": int((~active.any(0)).sum()), "n": int(acts.shape[0])}


def save_sae(sae, path) -> Path:
    """Write `sae` in SAELens' layout (``cfg.json`` + ``sae_weights.safetensors``); returns the directory."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    comp, layer = sae_hook(sae)
    cfg = {"architecture": "standard", "d_in": int(sae.W_dec.shape[1]), "d_sae": int(sae.W_dec.shape[0]),
           "hook_name": None if comp is None else f"blocks.{layer}.{_HOOK_NAME[comp]}",
           "apply_b_dec_to_input": True, "dtype": "float32", "name": getattr(sae, "name", None)}
    (path / "cfg.json").write_text(json.dumps(cfg, indent=1))
    save_file({k: getattr(sae, k).detach().contiguous().float() for k in ("W_enc", "b_enc", "W_dec", "b_dec")},
              str(path / "sae_weights.safetensors"))
    return path


def load_sae(path) -> SparseAutoencoder:
    """Read an SAE in SAELens' layout (architecture "standard", i.e. ReLU; others are refused by name);
    ``"testbed:NAME"`` is the SAE shipped with testbed NAME.

    Examples:
        >>> import causalinterp as ci
        >>> sae = ci.features.load_sae(ci.features.testbed_sae_path("induction"))
        >>> sae.hook, sae.d_sae
        (('resid_post', 1), 128)
    """
    from safetensors.torch import load_file
    name = None
    if isinstance(path, str) and path.startswith("testbed:"):
        name, path = path, testbed_sae_path(path.split(":", 1)[1])
    path = Path(path)
    if not (path / "cfg.json").is_file() or not (path / "sae_weights.safetensors").is_file():
        raise FeatureError(f"{path} is not an SAE directory (needs cfg.json and sae_weights.safetensors, "
                           "as written by ci.features.save_sae or SAELens' save_model)")
    cfg = json.loads((path / "cfg.json").read_text())
    arch = cfg.get("architecture", "standard")
    if arch != "standard":
        raise FeatureError(f"{path}: SAE architecture {arch!r} is not supported by load_sae (only 'standard' ReLU "
                           "SAEs); load it with SAELens and pass the SAE object to ci.sites.sae_features")
    if cfg.get("apply_b_dec_to_input", True) is not True:
        raise FeatureError(f"{path}: apply_b_dec_to_input=false is not supported by load_sae; load it with SAELens")
    w = load_file(str(path / "sae_weights.safetensors"))
    comp, layer = sae_hook(type("C", (), {"cfg": cfg})())
    sae = SparseAutoencoder(int(cfg["d_in"]), int(cfg["d_sae"]), hook=None if comp is None else (comp, layer),
                            name=cfg.get("name"))
    with torch.no_grad():
        for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, k).copy_(w[k].float())
    for p in sae.parameters():
        p.requires_grad_(False)
    sae.eval()
    sae.path = name or str(path)  # how a result file names it (testbed:NAME stays portable)
    return sae


def testbed_sae_path(name: str = "induction") -> Path:
    """Directory of the small SAE shipped with testbed `name` (see testbeds/README.md)."""
    from ..testbeds import DATA
    return DATA / name / "sae"




#: The recipe of the SAE shipped with the induction testbed (``python -m causalinterp.features.sae``).
TESTBED_SAE_RECIPE = {"testbed": "induction", "site": ["resid_post", 1], "prompts": 400, "data_seed": 100,
                      "d_sae": 128, "l1": 1e-2, "steps": 3000, "batch_size": 256, "lr": 3e-3, "seed": 0}


def train_testbed_sae(recipe: dict = TESTBED_SAE_RECIPE, out=None) -> SparseAutoencoder:
    """Train the testbed SAE of `recipe` on every token of induction prompts; save it to `out` if given.

    One torch thread, so the result is the same on any machine's CPU (~30 s).
    """
    from ..models.load import load_model
    from ..spec.sites import Site
    from ..testbeds import induction_data
    from .activations import collect
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model(f"testbed:{recipe['testbed']}")
        comp, layer = recipe["site"]
        acts = collect(model, induction_data(recipe["prompts"], seed=recipe["data_seed"]), Site(comp, layer))
        sae = train_sae(acts, recipe["d_sae"], hook=(comp, layer), l1=recipe["l1"], steps=recipe["steps"],
                        batch_size=recipe["batch_size"], lr=recipe["lr"], seed=recipe["seed"],
                        name=f"{recipe['testbed']}-{comp}-L{layer}")
    finally:
        torch.set_num_threads(threads)
    if out is not None:
        path = save_sae(sae, out)
        cfg = json.loads((path / "cfg.json").read_text())
        cfg.update(recipe=recipe, stats=sae.stats)
        (path / "cfg.json").write_text(json.dumps(cfg, indent=1))
    return sae


if __name__ == "__main__":  # pragma: no cover
    trained = train_testbed_sae(out=testbed_sae_path("induction"))
    print(trained, trained.stats)
