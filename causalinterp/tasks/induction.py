"""Induction contrast sets: a random token sequence followed by its repeat.

clean    [bos] s_0 .. s_{L-1} s_0 .. s_{L-2}      answer s_{L-1} (the token that follows in the repeat)
corrupt  [bos] s_0 .. s_{L-1} r_0 .. r_{L-2}      the second half replaced by fresh tokens (none of them
                                                  occurs earlier, so there is nothing to copy)

The tokens of one prompt (the sequence, the fresh tokens and `wrong`) are all distinct.  `wrong` is a token
that occurs nowhere in the prompt, so the logit difference answer - wrong measures copying against a
baseline token.

Named positions: ``rep0`` .. ``rep{L-2}`` (the repeated half; ``end`` is the last of them),
``first_answer`` (where the answer occurs in the first half: an induction head at ``end`` attends there)
and ``first_end`` (the first occurrence of the end token: a previous-token head at ``first_answer``
attends there).
"""
from __future__ import annotations

import random
from typing import Sequence

from ..spec.data import ContrastSet, DataError


def _pool_and_bos(vocab_or_tokenizer, tokens, bos):
    if isinstance(vocab_or_tokenizer, bool) or vocab_or_tokenizer is None:
        raise DataError("give a vocabulary size (int) or a tokenizer")
    if isinstance(vocab_or_tokenizer, int):
        if vocab_or_tokenizer < 1:
            raise DataError(f"vocab_size must be positive, got {vocab_or_tokenizer}")
        specials: set[int] = set()
        default_bos = None
        pool = range(vocab_or_tokenizer)
    else:
        tok = vocab_or_tokenizer
        if hasattr(tok, "get_vocab_size"):  # raw tokenizers.Tokenizer
            size = tok.get_vocab_size()
            specials = set()
            default_bos = None
        else:
            size = len(tok)
            specials = set(getattr(tok, "all_special_ids", []) or [])
            default_bos = getattr(tok, "bos_token_id", None)
        pool = [t for t in range(size) if t not in specials]
    bos_id = default_bos if bos == "auto" else bos
    if tokens is not None:
        pool = list(dict.fromkeys(int(t) for t in tokens))
    pool = [t for t in pool if t != bos_id]
    return pool, bos_id


def induction(vocab_size_or_tokenizer, n: int, *, seq_len: int, seed: int = 0,
              tokens: Sequence[int] | None = None, bos="auto") -> ContrastSet:
    """`n` repeated-random-sequence prompts as a `ContrastSet` (see the module docstring for the layout).

    vocab_size_or_tokenizer  an int (tokens drawn from 0..vocab_size-1) or a tokenizer (every id except its
                             special tokens)
    seq_len                  length L of the random sequence; each prompt is 2L - 1 tokens (+1 with a BOS)
    tokens                   optional pool of token ids to draw from instead
    bos                      a BOS token id to prepend, None for none, or "auto" (the tokenizer's BOS, if any)
    """
    if not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive int, got {n!r}")
    if not isinstance(seq_len, int) or seq_len < 2:
        raise DataError(f"seq_len must be an int >= 2 (a sequence and at least one repeated token), got {seq_len!r}")
    pool, bos_id = _pool_and_bos(vocab_size_or_tokenizer, tokens, bos)
    if len(pool) < 2 * seq_len:
        raise DataError(f"seq_len={seq_len} needs at least {2 * seq_len} distinct tokens to draw from (a sequence, "
                        f"fresh tokens for the corrupt half and a wrong token), but only {len(pool)} are available; "
                        "lower seq_len or give a larger vocabulary")
    rng = random.Random(seed)
    head = [] if bos_id is None else [int(bos_id)]
    clean, corrupt, answer, wrong = [], [], [], []
    for _ in range(n):
        drawn = rng.sample(pool, 2 * seq_len)
        seq, fresh, w = drawn[:seq_len], drawn[seq_len:2 * seq_len - 1], drawn[-1]
        clean.append(head + seq + seq[:-1])
        corrupt.append(head + seq + fresh)
        answer.append(seq[-1])
        wrong.append(w)
    off = len(head)
    positions = {f"rep{k}": off + seq_len + k for k in range(seq_len - 1)}
    positions["first_answer"] = off + seq_len - 1
    positions["first_end"] = off + seq_len - 2
    return ContrastSet.from_tokens(clean, corrupt, answer, wrong, positions=positions,
                                   name=f"induction[L={seq_len},seed={seed}]")
