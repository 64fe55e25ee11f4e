"""Name copying in short stories: a task for real tokenizers whose names are several tokens.

"Once upon a time, there was a little girl named Bay. Bay liked to play with her ball. One day, B" -> "ay".

A made-up name is two tokens (a capital letter piece and an ending, e.g. " B" + "ay").  The prompt stops after
the first token of the name's last mention, so the next token can only come from copying the earlier mention:

clean    the story with name A (e.g. Bay), cut after the last mention's first token     answer: A's ending ("ay")
corrupt  the same story with name B of the same first token (e.g. Ben)                   wrong:  B's ending ("en")

Small story models (e.g. llama2.c's stories260K) copy names like this; word-level IOI does not fit their
tokenizers, because almost no common name is one token there.  Named positions: ``name`` (the first mention's
ending, the first token where clean and corrupt differ) and ``end``.  No clusters are set: with a handful of
templates, cluster-level tests would have a handful of units (5 clusters: smallest p 1/32).
"""
from __future__ import annotations

import random
from typing import Sequence

from ..spec.data import ContrastSet, DataError
from .ioi import encode

STORY_TEMPLATES: tuple[str, ...] = (
    "Once upon a time, there was a little girl named {N}. {N} liked to play with her ball. One day, {N}",
    "Once upon a time, there was a boy named {N}. He had a big red ball. {N}",
    "There was a little dog named {N}. {N} was very happy. One day, {N}",
    "Once upon a time, there was a cat named {N}. The cat liked to sleep in the sun. One day, {N}",
    "Once upon a time, there was a bird named {N}. {N} could fly very high. Every day, {N}",
)
INITIALS = "BCDFGHJKLMNPRSTVWZ"
ENDINGS: tuple[str, ...] = ("ay", "en", "om", "ix", "ob", "ud", "el", "ar", "ip", "ot", "ek", "ag", "im", "ap", "an",
                            "on", "in", "at", "it", "un", "ed", "al", "ex", "oz", "ut", "ab", "id", "op", "uk", "ev")


def two_token_names(tokenizer, initials: str = INITIALS, endings: Sequence[str] = ENDINGS) -> dict[str, list[str]]:
    """Made-up names (initial + ending) that are exactly two tokens with a leading space, grouped by their
    first token: {initial: [names]}, only initials with at least two names (a clean/corrupt pair)."""
    groups: dict[str, list[str]] = {}
    for c in initials:
        first = encode(tokenizer, " " + c)
        if len(first) != 1:
            continue
        for e in endings:
            ids = encode(tokenizer, f" {c}{e}")
            if len(ids) == 2 and ids[0] == first[0]:
                groups.setdefault(c, []).append(c + e)
    return {c: names for c, names in groups.items() if len(names) >= 2}


def _bos(tokenizer, bos):
    if bos != "auto":
        return [] if bos is None else [int(bos)]
    b = getattr(tokenizer, "bos_token_id", None)
    return [] if b is None else [int(b)]


def name_copy(tokenizer, n: int, *, seed: int = 0, templates: Sequence[str] = STORY_TEMPLATES,
              bos="auto") -> ContrastSet:
    """`n` name-copying prompt pairs for `tokenizer` (see the module docstring).

    templates  stories with ``{N}`` for the name; the last ``{N}`` must end the text
    bos        a BOS token id to prepend, None for none, or "auto" (the tokenizer's BOS, if any)

    Raises `DataError` when the tokenizer has no made-up names of two tokens (e.g. a word-level vocabulary,
    or a BPE that keeps such names whole: use `tasks.ioi` there) or no template tokenises consistently.

    >>> data = name_copy(tokenizer, 32, seed=0)          # doctest: +SKIP
    >>> data.positions["name"][0] < data.positions["end"][0]   # doctest: +SKIP
    True
    """
    if not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive int, got {n!r}")
    for t in templates:
        if t.count("{N}") < 2 or not t.endswith("{N}"):
            raise DataError(f"template {t!r} must mention {{N}} at least twice and end with it")
    groups = two_token_names(tokenizer)
    if not groups:
        raise DataError("this tokenizer has no made-up two-token names (initial + ending, e.g. ' B'+'ay'); name_copy "
                        "needs them. Use tasks.ioi (single-token names) or tasks.induction instead.")
    head = _bos(tokenizer, bos)
    rng = random.Random(seed)
    initials = sorted(groups)
    clean, corrupt, answer, wrong, name_pos = [], [], [], [], []
    tries = 0
    while len(clean) < n:
        tries += 1
        if tries > 50 * n + 200:
            raise DataError(f"only {len(clean)} of {n} name_copy prompts tokenise consistently with this tokenizer "
                            "(the names must stay two tokens inside the story); give other templates")
        k = rng.randrange(len(templates))
        a, b = rng.sample(groups[rng.choice(initials)], 2)
        ta, tb = templates[k].replace("{N}", a), templates[k].replace("{N}", b)
        ia, ib = head + encode(tokenizer, ta), head + encode(tokenizer, tb)
        stem = head + encode(tokenizer, ta[:-len(a) - 1])  # the story up to the last mention
        if (len(ia) != len(ib) or len(ia) != len(stem) + 2 or ia[:len(stem)] != stem
                or ia[-2] != ib[-2] or ia[-1] == ib[-1]):
            continue
        diff = [i for i, (x, y) in enumerate(zip(ia[:-1], ib[:-1])) if x != y]
        if not diff:
            continue
        clean.append(ia[:-1])
        corrupt.append(ib[:-1])
        answer.append(ia[-1])
        wrong.append(ib[-1])
        name_pos.append(diff[0])
    return ContrastSet.from_tokens(clean, corrupt, answer, wrong, positions={"name": name_pos},
                                   name=f"name_copy(n={n}, seed={seed})")
