"""`load_model`: a Hugging Face causal LM wrapped in nnsight, with its site map."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..spec.sites import COMPONENTS
from .adapters import Adapter, UnsupportedModelError, adapter_for


class ModelLoadError(ValueError):
    """The model could not be loaded or wrapped."""


@dataclass(eq=False)
class Model:
    """A causal LM ready for interventions.

    `hf` is the unchanged Hugging Face model, `nn` the nnsight wrapper around the
    same weights (nothing is copied).  `remote=True` sends traces to NDIF.
    """

    hf: Any
    nn: Any
    tokenizer: Any
    adapter: Adapter
    remote: bool = False
    name: str = ""

    @property
    def config(self):
        return self.hf.config

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def d_head(self) -> int:
        return int(getattr(self.config, "head_dim", None) or self.d_model // self.n_heads)

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_output_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def components(self) -> list[str]:
        """Canonical components this model has (resid_mid is absent for parallel-attention NeoX)."""
        out = []
        for c in COMPONENTS:
            try:
                self.adapter.location(c, 0, self.config)
            except UnsupportedModelError:
                continue
            out.append(c)
        return out

    def location(self, component: str, layer: int):
        """Module path and input/output of `component` at `layer`, with a clear error for bad layers."""
        if not 0 <= layer < self.n_layers:
            raise UnsupportedModelError(f"layer {layer} does not exist; this model has layers 0..{self.n_layers - 1}")
        return self.adapter.location(component, layer, self.config)

    def envoy(self, path: str):
        """The nnsight envoy for a dotted module path."""
        env = self.nn
        for part in path.split("."):
            env = env[int(part)] if part.isdigit() else getattr(env, part)
        return env

    def read(self, tokens, component: str, layer: int) -> torch.Tensor:
        """Canonical activation of `component` at `layer` for token ids ``[batch, pos]`` (one nnsight trace)."""
        import nnsight

        from .adapters import component_view, raw_tensor
        loc = self.location(component, layer)
        tokens = torch.as_tensor(tokens)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        kwargs = {"remote": True} if self.remote else {}
        with torch.no_grad():  # not inference_mode: the result is a normal tensor the user may use with autograd
            with self.nn.trace(tokens.to(self.device), **kwargs):
                env = self.envoy(loc.module)
                raw = raw_tensor(env.input if loc.io == "input" else env.output)
                out = nnsight.save(component_view(self.adapter, component, raw, self.n_heads, self.n_kv_heads,
                                                  self.d_head).clone())
        return out.cpu()

    def site_map(self) -> pd.DataFrame:
        """One row per canonical component: the module (layer 0 shown as `{layer}`) and shape."""
        rows = []
        for c in COMPONENTS:
            try:
                loc = self.adapter.components[c]
                self.adapter.location(c, 0, self.config)
                module, io = loc.module, loc.io
                note = ""
            except (UnsupportedModelError, KeyError) as e:
                module, io, note = "(none)", "", str(e)
            heads = {"head_out": self.n_heads, "q": self.n_heads, "k": self.n_kv_heads, "v": self.n_kv_heads}.get(c)
            shape = f"[batch, pos, {heads}, {self.d_head}]" if heads else f"[batch, pos, {self.d_model}]"
            if c in ("k", "v") and self.n_kv_heads != self.n_heads:
                note = f"query head h uses key/value group h // {self.n_heads // self.n_kv_heads} (GQA)"
            rows.append({"component": c, "module": module, "io": io, "shape": shape if module != "(none)" else "",
                         "note": note})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"Model({self.name or type(self.hf).__name__}, family={self.family}, layers={self.n_layers}, "
                f"heads={self.n_heads}, d_model={self.d_model}, device={self.device})")


def _pick_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(model_or_name, tokenizer=None, *, device="auto", dtype=None, remote: bool = False) -> Model:
    """Load or wrap a causal LM for interventions.

    `model_or_name`: a Hugging Face id or local path (loaded with `from_pretrained`), ``"testbed:NAME"``
    for a model shipped with causalinterp, or an already-built `PreTrainedModel` (wrapped, not copied).
    `tokenizer` is optional: data can be given as token ids.  `remote=True` runs traces on NDIF through
    nnsight's remote execution (needs an NDIF API key and a hosted model id; not testable offline).
    """
    import nnsight
    from transformers import PreTrainedModel

    name = ""
    if isinstance(model_or_name, str):
        name = model_or_name
        if model_or_name.startswith("testbed:"):
            from .. import testbeds
            return testbeds.load(model_or_name.split(":", 1)[1], device=device)
        if remote:
            nn_model = nnsight.LanguageModel(model_or_name)
            return Model(hf=nn_model._model, nn=nn_model, tokenizer=nn_model.tokenizer,
                         adapter=adapter_for(nn_model._model.config), remote=True, name=name)
        from transformers import AutoModelForCausalLM, AutoTokenizer
        try:
            hf = AutoModelForCausalLM.from_pretrained(model_or_name, dtype=dtype)
        except OSError as e:
            raise ModelLoadError(f"could not load {model_or_name!r} with from_pretrained: {e}. Check the id/path, "
                                 "or that the weights are in the local Hugging Face cache when offline.") from e
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(model_or_name)
    elif isinstance(model_or_name, PreTrainedModel):
        hf = model_or_name
    elif isinstance(model_or_name, Model):
        return model_or_name
    else:
        raise ModelLoadError(f"load_model needs a model id/path, 'testbed:NAME', or a transformers PreTrainedModel; "
                             f"got {type(model_or_name).__name__}")
    adapter = adapter_for(hf.config)
    hf = hf.to(_pick_device(device))
    if dtype is not None:
        hf = hf.to(dtype)
    hf.eval()
    return Model(hf=hf, nn=nnsight.NNsight(hf), tokenizer=tokenizer, adapter=adapter, remote=False, name=name)
