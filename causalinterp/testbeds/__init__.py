"""Small models trained in this repository whose circuits are known: ground truth without the model hub.

    import causalinterp as ci
    model = ci.testbeds.load("induction")          # a `Model`, like load_model("testbed:induction")
    data = ci.testbeds.induction_data(200, seed=0)  # a ContrastSet for its tokenizer
    ci.testbeds.card("induction")["circuit_heads"]  # [[0, p], [1, i]]

`available()` lists the names.  Knock-out variants (``induction-ko``) are the base weights with chosen heads'
output weights (their rows of ``attn.c_proj.weight``) set to zero at load time, so those heads have exactly
zero causal effect; `card(name)["knocked_out"]` lists them.  Retrain with
``python -m causalinterp.testbeds.train NAME``; README.md here records every model's facts.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


class TestbedError(ValueError):
    """Unknown testbed or missing testbed files."""

    __test__ = False  # not a pytest test class


def _dir(data_dir) -> Path:
    return Path(data_dir) if data_dir is not None else DATA


def available(*, data_dir=None) -> list[str]:
    """Names of the shipped testbeds (base models and their knock-out variants)."""
    d = _dir(data_dir)
    return sorted(p.name for p in d.iterdir() if (p / "card.json").is_file()) if d.is_dir() else []


@lru_cache(maxsize=None)
def _read_card(path: str) -> str:
    return Path(path).read_text()


def card(name: str, *, data_dir=None) -> dict:
    """The recorded facts of testbed `name`: architecture, recipe, metrics, ``circuit_heads`` and
    ``knocked_out`` (lists of [layer, head]); a knock-out variant also names its ``base``."""
    path = _dir(data_dir) / name / "card.json"
    if not path.is_file():
        raise TestbedError(f"no testbed {name!r}; available: {', '.join(available(data_dir=data_dir)) or '(none)'}")
    c = json.loads(_read_card(str(path)) if data_dir is None else path.read_text())
    c.setdefault("knocked_out", [])
    return c


def _base(name: str, data_dir=None) -> str:
    return card(name, data_dir=data_dir).get("base") or name


def tokenizer(name: str = "induction", *, data_dir=None):
    """The testbed's tokenizer: a `PreTrainedTokenizerFast` around its WordLevel tokenizer.json."""
    from .common import wrap_tokenizer
    path = _dir(data_dir) / _base(name, data_dir) / "tokenizer.json"
    if not path.is_file():
        raise TestbedError(f"testbed {name!r} has no tokenizer file at {path}")
    return wrap_tokenizer(path)


def load_hf(name: str, *, data_dir=None):
    """The bare Hugging Face model (GPT2LMHeadModel, eval mode, eager attention), knock-outs applied."""
    from transformers import GPT2LMHeadModel

    from .common import knock_out
    c = card(name, data_dir=data_dir)
    d = _dir(data_dir) / _base(name, data_dir)
    if not (d / "model.safetensors").is_file():
        raise TestbedError(f"testbed {name!r} has no weights at {d / 'model.safetensors'}; retrain with "
                           f"python -m causalinterp.testbeds.train {_base(name, data_dir)}")
    from transformers.utils import logging as hf_logging
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 100 kB model needs no "Loading weights" bar
    try:
        hf = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager", local_files_only=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    knock_out(hf, c["knocked_out"])
    hf.eval()
    return hf


def load(name: str, device="auto", *, data_dir=None):
    """Testbed `name` as a `Model` (through `load_model`, so every site kind works)."""
    from ..models.load import load_model
    m = load_model(load_hf(name, data_dir=data_dir), tokenizer(name, data_dir=data_dir), device=device)
    m.name = f"testbed:{name}"
    return m


def induction_data(n: int, seed: int = 0, *, seq_len: int = 16, tokenizer=None):
    """Repeated random sequences of t-tokens for the induction testbeds (``[bos] s s[:-1]``)."""
    from ..tasks import induction
    from .common import BOS, induction_pool
    tok = tokenizer if tokenizer is not None else globals()["tokenizer"]("induction")
    return induction(tok, n, seq_len=seq_len, seed=seed, tokens=induction_pool(tok), bos=BOS)


def ioi_data(n: int, seed: int = 0, *, templates="mixed", corruption: str = "ABC", tokenizer=None, **kw):
    """IOI prompts for the ioi testbeds' tokenizer (a thin wrapper over `tasks.ioi`)."""
    from ..tasks import ioi
    tok = tokenizer if tokenizer is not None else globals()["tokenizer"]("ioi")
    return ioi(tok, n, templates=templates, corruption=corruption, seed=seed, **kw)


__all__ = ["DATA", "TestbedError", "available", "card", "induction_data", "ioi_data", "load", "load_hf",
           "tokenizer"]
