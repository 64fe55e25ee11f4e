"""Feature ground truth on the induction testbed: which of two tokens gets copied.

`copy_choice_data` builds induction prompts ``[bos] s_0 .. s_{L-1} s_0 .. s_{L-2}`` whose answer s_{L-1} is one of
two fixed tokens `a`, `b`; the corrupt prompt is the same sequence with s_{L-1} swapped for the other one, so the
answer (clean) and `wrong` (what the corrupt prompt copies) are {a, b} and nothing else differs.  At ``end`` the
induction head copies the token into the residual stream, so after layer 1 "a versus b" is a known 1-D feature:
the final norm's gain times the unembedding difference, ``known_direction`` (the direction the logit difference
a - b reads).  Random directions, positions before the copy (``resid_pre`` L0 @end) and the Hewitt & Liang control
task are the nulls.
"""
from __future__ import annotations

import random

import torch

from ..spec.data import ContrastSet


def copy_choice_data(n: int, seed: int = 0, *, seq_len: int = 8, a: str = "t0", b: str = "t1") -> ContrastSet:
    """`n` prompts (half copy `a`, half copy `b`; clusters none) for the induction testbed's tokenizer.

    Examples:
        >>> import causalinterp as ci
        >>> data = ci.features.copy_choice_data(10)
        >>> sorted(set(data.answer)) == sorted(set(data.wrong))
        True
    """
    from ..testbeds import tokenizer
    from ..testbeds.common import BOS, induction_pool
    tok = tokenizer("induction")
    ta, tb = tok.convert_tokens_to_ids(a), tok.convert_tokens_to_ids(b)
    pool = [t for t in induction_pool(tok) if t not in (ta, tb)]
    rng = random.Random(seed)
    clean, corrupt, answer, wrong = [], [], [], []
    seen = set()
    while len(clean) < n:
        seq = rng.sample(pool, seq_len - 1)
        ans, other = (ta, tb) if len(clean) % 2 == 0 else (tb, ta)
        key = (tuple(seq), ans)
        if key in seen:
            continue
        seen.add(key)
        clean.append([BOS] + seq + [ans] + seq)
        corrupt.append([BOS] + seq + [other] + seq)
        answer.append(ans)
        wrong.append(other)
    positions = {"first_answer": seq_len, "first_end": seq_len - 1}
    return ContrastSet.from_tokens(clean, corrupt, answer, wrong, positions=positions,
                                   name=f"copy_choice[{a}/{b},L={seq_len},seed={seed}]")


def known_direction(model, a: str = "t0", b: str = "t1") -> torch.Tensor:
    """Unit vector [d] of resid_post at the last layer that the logit difference a - b reads: the final layer
    norm's gain times W_U[a] - W_U[b], centred (the norm removes the mean)."""
    tok = model.tokenizer
    ta, tb = tok.convert_tokens_to_ids(a), tok.convert_tokens_to_ids(b)
    hf = model.hf
    W = hf.get_output_embeddings().weight.detach()
    gain = hf.transformer.ln_f.weight.detach()
    v = gain * (W[ta] - W[tb])
    v = v - v.mean()
    return (v / v.norm()).float()
