"""Indirect object identification (IOI) contrast sets.

"When Mary and John went to the store, John gave a drink to" -> " Mary".

The templates, names, places and objects are the published ones of Wang et al. (2023), "Interpretability
in the Wild" (15 BABA templates; the ABBA templates swap the two names of the first clause).  In a
template ``[A]`` is the indirect object (IO), ``[B]`` the subject (S, mentioned twice: S1 and S2); every
template ends with `` [A]``, which is cut off: it is the answer.

Works with any tokenizer: a Hugging Face tokenizer (fast ones give character offsets; slow ones are
handled by prefix encoding), or a raw ``tokenizers.Tokenizer``.  Only names that are one token in
context (for GPT-2's BPE: with their leading space, e.g. " Mary") are used.
"""
from __future__ import annotations

import random
import re
from typing import Sequence

from ..spec.data import ContrastSet, DataError

NAMES: tuple[str, ...] = (
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda", "Daniel", "David",
    "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon", "Jason", "Justin", "Sarah", "William",
    "Jonathan", "Stephanie", "Brian", "Nicole", "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth", "Adam",
    "Megan", "Melissa", "Kevin", "Steven", "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren",
    "Amber", "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle", "Tiffany",
    "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob", "Stephen", "Patrick", "Sean",
    "Erin", "Jamie", "Kelly", "Samantha", "Nathan", "Sara", "Dustin", "Paul", "Angela", "Tyler", "Scott",
    "Katherine", "Andrea", "Gregory", "Erica", "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen",
    "Jose", "Alexander", "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia",
    "Cody", "Allison", "Bradley", "Samuel",
)
PLACES: tuple[str, ...] = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS: tuple[str, ...] = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")

BABA_TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
)

_NAME_SLOT = re.compile(r"\[A\]|\[B\]")
_SLOT = re.compile(r"\[A\]|\[B\]|\[PLACE\]|\[OBJECT\]")


def _abba(template: str) -> str:
    """Swap the first two name slots (the first clause): "[B] and [A]" -> "[A] and [B]"."""
    slots = list(_NAME_SLOT.finditer(template))
    (m1, m2) = slots[0], slots[1]
    return (template[:m1.start()] + m2.group(0) + template[m1.end():m2.start()] + m1.group(0)
            + template[m2.end():])


ABBA_TEMPLATES: tuple[str, ...] = tuple(_abba(t) for t in BABA_TEMPLATES)

#: template id -> template; ids are "BABA-00".."BABA-14" and "ABBA-00".."ABBA-14"
TEMPLATES: dict[str, str] = {**{f"BABA-{i:02d}": t for i, t in enumerate(BABA_TEMPLATES)},
                             **{f"ABBA-{i:02d}": t for i, t in enumerate(ABBA_TEMPLATES)}}

# ------------------------------------------------------------------------------------------------
# tokenizer plumbing (shared with tasks.induction)
# ------------------------------------------------------------------------------------------------


def _is_raw_tokenizer(tok) -> bool:
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover
        return False
    return isinstance(tok, Tokenizer)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text`, without special tokens."""
    if _is_raw_tokenizer(tokenizer):
        return list(tokenizer.encode(text, add_special_tokens=False).ids)
    return list(tokenizer.encode(text, add_special_tokens=False))


def _encode_offsets(tokenizer, text: str):
    """(ids, offsets) where offsets are character spans per token, or (ids, None) when unavailable."""
    if _is_raw_tokenizer(tokenizer):
        enc = tokenizer.encode(text, add_special_tokens=False)
        return list(enc.ids), list(enc.offsets)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    return encode(tokenizer, text), None


def _unk_id(tokenizer):
    if _is_raw_tokenizer(tokenizer):
        model = tokenizer.get_model() if hasattr(tokenizer, "get_model") else tokenizer.model
        unk = getattr(model, "unk_token", None)
        return tokenizer.token_to_id(unk) if unk else None
    return getattr(tokenizer, "unk_token_id", None)


def _locate(tokenizer, text: str, spans: dict[str, tuple[int, int]]):
    """Token ids of `text` and, per labelled character span, the index of the one token that holds it.

    Returns (ids, {label: index}) or (ids, None) when some span is not exactly one token.
    """
    ids, offsets = _encode_offsets(tokenizer, text)
    where = {}
    if offsets is not None:
        for label, (a, b) in spans.items():
            hits = [k for k, (s, e) in enumerate(offsets) if e > s and s < b and e > a]
            if len(hits) != 1:
                return ids, None
            s, e = offsets[hits[0]]
            # the token may carry the name's leading space, but nothing else
            if text[min(s, a):a].strip() or e > b:
                return ids, None
            where[label] = hits[0]
        return ids, where
    # slow tokenizer: the name (with its leading space) must be the next token after the encoded prefix
    for label, (a, b) in spans.items():
        a0 = a - 1 if a > 0 and text[a - 1] == " " else a
        prefix = encode(tokenizer, text[:a0])
        upto = encode(tokenizer, text[:b])
        if len(upto) != len(prefix) + 1 or ids[:len(upto)] != upto:
            return ids, None
        where[label] = len(prefix)
    return ids, where


_NAME_FRAMES = ("Then, {} and", "and {} went", "gave it to {}")


def single_token_names(tokenizer, names: Sequence[str] = NAMES) -> list[str]:
    """The names that are one token (the same token id) in every context the templates put them in.

    For GPT-2-style BPE that is the name with its leading space (" Mary"); a word-level tokenizer must have
    the name in its vocabulary (names that map to the unknown token are dropped).
    """
    unk = _unk_id(tokenizer)
    keep = []
    for name in names:
        tok_ids = set()
        for frame in _NAME_FRAMES:
            text = frame.format(name)
            a = text.index(name, len(frame.split("{}")[0]))
            ids, where = _locate(tokenizer, text, {"n": (a, a + len(name))})
            if where is None:
                break
            tok_ids.add(ids[where["n"]])
        else:
            if len(tok_ids) == 1 and next(iter(tok_ids)) != unk:
                keep.append(name)
    return keep


def name_token(tokenizer, name: str) -> int:
    """The token id of `name` in context (with its leading space for BPE tokenizers)."""
    text = _NAME_FRAMES[2].format(name)
    ids, where = _locate(tokenizer, text, {"n": (len(text) - len(name), len(text))})
    if where is None:
        raise DataError(f"name {name!r} is not a single token for this tokenizer")
    return ids[where["n"]]


# ------------------------------------------------------------------------------------------------
# templates
# ------------------------------------------------------------------------------------------------


def _check_template(t: str, label: str) -> None:
    slots = [m.group(0) for m in _NAME_SLOT.finditer(t)]
    if not t.endswith(" [A]") or slots.count("[A]") != 2 or slots.count("[B]") != 2:
        raise DataError(f"template {label} = {t!r} is not an IOI template: it needs one [A] (the IO) and two [B] "
                        "(the subject) before a final ' [A]' (the answer), e.g. "
                        "'When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to [A]'")


def resolve_templates(templates) -> list[tuple[str, str]]:
    """[(template id, template)] for "mixed" | "BABA" | "ABBA", or a sequence of template ids / templates."""
    if isinstance(templates, str):
        if templates == "mixed":
            return list(TEMPLATES.items())
        if templates in ("BABA", "ABBA"):
            return [(k, t) for k, t in TEMPLATES.items() if k.startswith(templates)]
        if templates in TEMPLATES:
            return [(templates, TEMPLATES[templates])]
        raise DataError(f"templates={templates!r}: use 'mixed', 'BABA', 'ABBA', or a list of template ids "
                        f"({', '.join(list(TEMPLATES)[:2])}, ...) or template strings")
    out = []
    for k, t in enumerate(templates):
        if t in TEMPLATES:
            out.append((t, TEMPLATES[t]))
        else:
            _check_template(t, f"#{k}")
            out.append((f"custom-{k:02d}", t))
    if not out:
        raise DataError("templates is empty: give at least one template")
    return out


def fill(template: str, io: str, s1: str, s2: str, place: str, obj: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The prompt text (the final ' [A]' cut off) and the character spans of the IO, S1 and S2 names."""
    body = template[:-len(" [A]")]
    text, spans, cur, n_b = "", {}, 0, 0
    for m in _SLOT.finditer(body):
        text += body[cur:m.start()]
        tag = m.group(0)
        if tag == "[A]":
            rep, label = io, "IO"
        elif tag == "[B]":
            rep, label = (s1, "S1") if n_b == 0 else (s2, "S2")
            n_b += 1
        else:
            rep, label = (place if tag == "[PLACE]" else obj), None
        if label:
            spans[label] = (len(text), len(text) + len(rep))
        text += rep
        cur = m.end()
    return text + body[cur:], spans


# ------------------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------------------


def ioi(tokenizer, n: int, *, templates="mixed", corruption: str = "ABC", seed: int = 0,
        names: Sequence[str] | None = None, places: Sequence[str] | None = None,
        objects: Sequence[str] | None = None, min_names: int = 10) -> ContrastSet:
    """`n` IOI prompts as a `ContrastSet`.

    templates   "mixed" (15 BABA + 15 ABBA), "BABA", "ABBA", or a list of template ids (see `TEMPLATES`) or
                template strings; prompts cycle through them in a seeded order, so each is used about
                equally often
    corruption  "ABC": the IO, S1 and S2 names replaced by three other distinct names (the task information
                is gone); "swap": IO and S exchanged (the correct answer becomes the old S)
    answer = IO token, wrong = S token.  Named positions ``IO``, ``S1``, ``S2`` and ``end``; `clusters` is the
    template id of each prompt (for a cluster bootstrap).  Same arguments and seed -> the same set.
    """
    if not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive int, got {n!r}")
    if corruption not in ("ABC", "swap"):
        raise DataError(f"corruption={corruption!r}: use 'ABC' (three unrelated names) or 'swap' (IO <-> S)")
    tmpl = resolve_templates(templates)
    pool = list(dict.fromkeys(names if names is not None else NAMES))
    usable = single_token_names(tokenizer, pool)
    need = max(min_names, 5 if corruption == "ABC" else 2)
    if len(usable) < need:
        dropped = [x for x in pool if x not in usable][:8]
        raise DataError(f"only {len(usable)} of {len(pool)} names are a single token for this tokenizer (need at "
                        f"least {need}; e.g. not single-token: {dropped}). Pass names= a list of names in the "
                        "tokenizer's vocabulary (GPT-2-style BPE: names that are one token with a leading space), "
                        "or lower min_names=.")
    places = list(places if places is not None else PLACES)
    objects = list(objects if objects is not None else OBJECTS)
    if not places or not objects:
        raise DataError("places and objects must each hold at least one word")
    rng = random.Random(seed)
    order: list[int] = []
    clean, corrupt, answer, wrong, clusters = [], [], [], [], []
    pos = {"IO": [], "S1": [], "S2": []}
    for i in range(n):
        if not order:
            order = list(range(len(tmpl)))
            rng.shuffle(order)
        tid, template = tmpl[order.pop()]
        for _attempt in range(100):
            io, s = rng.sample(usable, 2)
            place, obj = rng.choice(places), rng.choice(objects)
            if corruption == "ABC":
                others = [x for x in usable if x != io and x != s]
                c_io, c_s1, c_s2 = rng.sample(others, 3)
            else:
                c_io, c_s1, c_s2 = s, io, io
            text, spans = fill(template, io, s, s, place, obj)
            ctext, cspans = fill(template, c_io, c_s1, c_s2, place, obj)
            ids, where = _locate(tokenizer, text, spans)
            cids, cwhere = _locate(tokenizer, ctext, cspans)
            if where is None or cwhere is None or len(ids) != len(cids) or where != cwhere:
                continue
            # the answer must be the IO token when it follows the prompt, and S the S2 token
            if ids[where["S1"]] != ids[where["S2"]]:
                continue
            full = encode(tokenizer, text + " " + io)
            if full[:len(ids)] != ids or len(full) != len(ids) + 1 or full[-1] != ids[where["IO"]]:
                continue
            break
        else:
            raise DataError(f"prompt {i}: could not build a prompt from template {tid} whose names are single, "
                            "aligned tokens in 100 tries; this tokenizer merges names with their context. "
                            "Pass names= or templates= that tokenise cleanly.")
        clean.append(ids)
        corrupt.append(cids)
        answer.append(ids[where["IO"]])
        wrong.append(ids[where["S2"]])
        for k in pos:
            pos[k].append(where[k])
        clusters.append(tid)
    label = templates if isinstance(templates, str) else "custom"
    return ContrastSet.from_tokens(clean, corrupt, answer, wrong, positions=pos, clusters=clusters,
                                   name=f"ioi[{label},{corruption},seed={seed}]")
