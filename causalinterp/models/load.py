"""`load_model`: a Hugging Face causal LM wrapped in nnsight, with its site map."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..spec.sites import COMPONENTS
from .adapters import Absent, Adapter, Location, UnsupportedModelError, supported_text, table_for
from .derive import envoy


class ModelLoadError(ValueError):
    """The model could not be loaded or wrapped."""


@dataclass(eq=False)
class Model:
    """A causal LM ready for interventions.

    `hf` is the unchanged Hugging Face model, `nn` the nnsight wrapper around the
    same weights (nothing is copied).  `remote=True` sends traces to NDIF.

    Examples:
        >>> import causalinterp as ci
        >>> model = ci.load_model("testbed:induction")
        >>> model.n_layers, model.n_heads, model.family
        (2, 4, 'gpt2')
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
        if self.adapter.kv_heads is not None:
            return int(self.adapter.kv_heads(self.config))
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
        return envoy(self.nn, path)

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
        """One row per canonical component: the module (``{layer}`` stands for the layer), input/output, shape,
        and status: ``verified`` (a table tested from configs against hand-written hooks), ``derived`` (located
        and checked by identities when the model was loaded) or ``absent`` (with the reason in `note`)."""
        rows = []
        for c in COMPONENTS:
            loc = self.adapter.components.get(c)
            heads = {"head_out": self.n_heads, "q": self.n_heads, "k": self.n_kv_heads, "v": self.n_kv_heads}.get(c)
            if isinstance(loc, Location):
                shape = f"[batch, pos, {heads}, {self.d_head}]" if heads else f"[batch, pos, {self.d_model}]"
                note = ""
                if c in ("k", "v") and self.n_kv_heads != self.n_heads:
                    note = f"query head h uses key/value group h // {self.n_heads // self.n_kv_heads} (GQA)"
                if c in ("head_out", "q", "k", "v") and loc.layout != "separate":
                    note = (note + "; " if note else "") + f"head layout {loc.layout}"
                rows.append({"component": c, "module": loc.module, "io": loc.io, "shape": shape,
                             "status": self.adapter.status, "note": note})
            else:
                reason = loc.reason if isinstance(loc, Absent) else f"not in the {self.family} table"
                rows.append({"component": c, "module": "(none)", "io": "", "shape": "", "status": "absent",
                             "note": reason})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (f"Model({self.name or type(self.hf).__name__}, family={self.family}, adapter={self.adapter.status}, "
                f"layers={self.n_layers}, "
                f"heads={self.n_heads}, d_model={self.d_model}, device={self.device})")


def _pick_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# Loaders for "scheme:NAME" model names (e.g. "testbed:induction"), registered by the package that owns them
# (causalinterp/__init__.py registers the testbeds), so this module does not import them.
_SCHEMES: dict = {}


def register_scheme(scheme: str, loader) -> None:
    """Make ``load_model("scheme:NAME", device=...)`` call ``loader(NAME, device=...)`` (which returns a `Model`)."""
    _SCHEMES[scheme] = loader


def _from_pretrained(name: str, dtype, gguf_file: str | None, want_tokenizer: bool = True):
    """A causal LM and (when it has one) its tokenizer, from a hub id, a folder, or a .gguf file."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from pathlib import Path
    path = Path(name)
    if gguf_file is None and path.suffix == ".gguf" and path.is_file():
        name, gguf_file = str(path.parent), path.name
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        if gguf_file:
            try:
                import gguf  # noqa: F401
            except ImportError as e:
                raise ModelLoadError("loading a GGUF file needs the `gguf` package: pip install gguf") from e
            # GGUF files store "no padding token" as 2**32 - 1, which transformers' embedding rejects
            # ("Padding_idx must be within num_embeddings"); drop an out-of-range id.
            config = AutoConfig.from_pretrained(name, **kwargs)
            vocab = getattr(config, "vocab_size", None)
            if vocab is not None and getattr(config, "pad_token_id", None) is not None and config.pad_token_id >= vocab:
                config.pad_token_id = None
            kwargs["config"] = config
        hf = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    except OSError as e:
        raise ModelLoadError(f"could not load {name!r} with from_pretrained: {e}. Check the id/path, "
                             "or that the weights are in the local Hugging Face cache when offline.") from e
    if not want_tokenizer:
        return hf, None
    try:
        tok = AutoTokenizer.from_pretrained(name, **({"gguf_file": gguf_file} if gguf_file else {}))
    except Exception as e:  # noqa: BLE001 - a model without a usable tokenizer still works on token ids
        import warnings
        warnings.warn(f"no tokenizer could be loaded for {name!r} ({type(e).__name__}: {e}); the model works on "
                      "token ids, or pass tokenizer=... to load_model", stacklevel=3)
        tok = None
    return hf, tok


def load_model(model_or_name, tokenizer=None, *, device="auto", dtype=None, remote: bool = False,
               adapter="auto", gguf_file: str | None = None) -> Model:
    """Load or wrap a causal LM for interventions.

    `model_or_name`: a Hugging Face id or local path (loaded with `from_pretrained`; a path to a ``.gguf``
    file, or `gguf_file` inside a folder, loads GGUF weights), ``"testbed:NAME"`` for a model shipped with
    causalinterp, or an already-built `PreTrainedModel` (wrapped, not copied).
    `tokenizer` is optional: data can be given as token ids.  `remote=True` runs traces on NDIF through
    nnsight's remote execution (needs an NDIF API key and a hosted model id; not testable offline).
    `adapter`: ``"auto"`` uses the family's table and derives (and checks) one for decoder-only models
    without a table; ``"derive"`` derives even where a table exists (to cross-check); or an `Adapter`.

    Examples:
        >>> import causalinterp as ci
        >>> model = ci.load_model("testbed:induction")          # or "gpt2", a local folder, a PreTrainedModel
        >>> model.site_map()["component"].tolist()[:3]
        ['resid_pre', 'resid_mid', 'resid_post']
    """
    import nnsight
    from transformers import PreTrainedModel

    name = ""
    if isinstance(model_or_name, str):
        name = model_or_name
        scheme, sep, rest = model_or_name.partition(":")
        if sep and scheme in _SCHEMES:
            return _SCHEMES[scheme](rest, device=device)
        if remote:
            nn_model = nnsight.LanguageModel(model_or_name)
            return Model(hf=nn_model._model, nn=nn_model, tokenizer=nn_model.tokenizer,
                         adapter=_table(nn_model._model.config), remote=True, name=name)
        hf, tok = _from_pretrained(model_or_name, dtype, gguf_file, want_tokenizer=tokenizer is None)
        tokenizer = tokenizer if tokenizer is not None else tok
    elif isinstance(model_or_name, PreTrainedModel):
        hf = model_or_name
    elif isinstance(model_or_name, Model):
        return model_or_name
    else:
        raise ModelLoadError(f"load_model needs a model id/path, 'testbed:NAME', or a transformers PreTrainedModel; "
                             f"got {type(model_or_name).__name__}")
    hf = hf.to(_pick_device(device))
    if dtype is not None:
        hf = hf.to(dtype)
    hf.eval()
    table = _check_adapter_request(hf, adapter)
    model = Model(hf=hf, nn=nnsight.NNsight(hf), tokenizer=tokenizer, adapter=table or _PENDING, remote=False,
                  name=name)
    if table is None:
        from .derive import derive
        model.adapter = derive(model)
    return model


_PENDING = Adapter(family="(pending)", model_types=(), layers="", components={}, status="pending")


def _table(config) -> Adapter:
    a = table_for(getattr(config, "model_type", None))
    if a is None:
        raise UnsupportedModelError(
            f"no adapter for model_type {getattr(config, 'model_type', None)!r} (remote models need a table). "
            f"Supported families: {supported_text()}. To add one, see CONTRIBUTING.md, section 'Adding an architecture'.")
    return a.for_config(config)


def _check_adapter_request(hf, adapter) -> Adapter | None:
    """The adapter to use, or None where one must be derived; a clear error where none can be."""
    if isinstance(adapter, Adapter):
        return adapter
    if adapter not in ("auto", "derive"):
        raise ModelLoadError(f"adapter must be 'auto', 'derive' or an Adapter, got {adapter!r}")
    table = table_for(getattr(hf.config, "model_type", None))
    if table is not None and adapter == "auto":
        return table.for_config(hf.config)
    causal_head = type(hf).__name__.endswith(("ForCausalLM", "LMHeadModel"))
    if getattr(hf.config, "is_encoder_decoder", False) or not causal_head:
        raise UnsupportedModelError(
            f"no adapter for model_type {getattr(hf.config, 'model_type', None)!r}, and it is not a decoder-only "
            f"causal LM ({type(hf).__name__}), so none can be derived. Supported families: {supported_text()}. "
            "To add one, see CONTRIBUTING.md, section 'Adding an architecture'.")
    return None
