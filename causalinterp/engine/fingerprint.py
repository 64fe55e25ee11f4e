"""Content hashes: what a scan's results depend on, so results are addressed by content, not by name.

A unit's hash covers the model's weights (a hash of per-tensor checksums, computed once per model
and recomputed only when a parameter changes in place), the tokenizer, the data, the sites, the
intervention, the metric and the rows of the unit.  Two runs that would compute the same numbers get
the same hashes; anything that could change a number changes them.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

HASH_LEN = 24  # hex characters kept (96 bits): short file names, collisions negligible


def digest(*parts: Any) -> str:
    """Hash of JSON-serialisable parts (keys sorted, so dict order never matters)."""
    text = json.dumps(parts, sort_keys=True, default=_jsonable, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def _jsonable(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "model_dump"):  # pydantic specs
        return obj.model_dump(mode="json")
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"cannot hash an object of type {type(obj).__name__}")


def tensor_checksum(t: torch.Tensor) -> str:
    """Checksum of a tensor's exact bytes, dtype and shape (bf16 and other non-numpy dtypes included)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    raw = t.view(torch.uint8) if t.numel() and t.element_size() > 0 else t
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(raw.numpy().tobytes() if raw.numel() else b"")
    return h.hexdigest()


def _state_key(hf) -> tuple:
    """Cheap identity of the current weights: storage addresses and in-place version counters."""
    return tuple((name, p.data_ptr(), p._version, str(p.dtype), str(p.device))
                 for name, p in hf.state_dict(keep_vars=True).items())


def weights_hash(model) -> str:
    """Hash of every parameter and buffer of `model.hf` (per-tensor checksums, cached on the model).

    The cache is keyed by each tensor's storage address and in-place version counter, so an
    in-place edit of the weights (e.g. a knock-out) gives a new hash while repeated scans of the
    same model hash it once.  Tied weights are hashed under each name (cheap; order is fixed).
    """
    key = _state_key(model.hf)
    cached = getattr(model, "_weights_hash", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    sums = {name: tensor_checksum(t) for name, t in model.hf.state_dict().items()}
    value = digest(type(model.hf).__name__, sums)
    model._weights_hash = (key, value)
    return value


def tokenizer_hash(tokenizer) -> str | None:
    """Hash of a tokenizer's full definition (fast tokenizers) or vocabulary; None when there is none."""
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None) or (tokenizer if hasattr(tokenizer, "to_str") else None)
    if backend is not None:
        return digest(backend.to_str())
    if hasattr(tokenizer, "get_vocab"):
        return digest(sorted(tokenizer.get_vocab().items()))
    return digest(type(tokenizer).__name__)
