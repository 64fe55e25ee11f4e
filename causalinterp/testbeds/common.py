"""What the testbeds package and its training code share: special tokens, the tokenizer wrapper, knock-outs.

Kept apart from `train` so that loading a testbed never imports the training code (no import cycle).
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ("<pad>", "<unk>", "<bos>")
PAD, UNK, BOS = 0, 1, 2
INDUCTION_TOKENS = 100   # the induction testbed's vocabulary: t0 ... t99 (besides the specials)


def wrap_tokenizer(tk_or_file):
    """`PreTrainedTokenizerFast` around a WordLevel tokenizer (object or tokenizer.json path)."""
    from transformers import PreTrainedTokenizerFast
    kw = {"tokenizer_file": str(tk_or_file)} if isinstance(tk_or_file, (str, Path)) else {"tokenizer_object": tk_or_file}
    return PreTrainedTokenizerFast(**kw, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   clean_up_tokenization_spaces=False)


def knock_out(hf, heads) -> None:
    """Zero the c_proj weight rows of each (layer, head): its output can no longer reach the residual stream."""
    dh = hf.config.n_embd // hf.config.n_head
    import torch

    with torch.no_grad():
        for layer, head in heads:
            hf.transformer.h[int(layer)].attn.c_proj.weight[int(head) * dh:(int(head) + 1) * dh, :] = 0.0


def induction_pool(tokenizer) -> list[int]:
    """Token ids of the induction testbed's ordinary tokens (t0 ... t99), the pool its sequences are drawn from."""
    return [tokenizer.convert_tokens_to_ids(w) for w in (f"t{i}" for i in range(INDUCTION_TOKENS))]
