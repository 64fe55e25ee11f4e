"""`ContrastSet`: paired clean/corrupt prompts, the answers the metric reads, and named positions.

Pure data (token ids as tuples), immutable, comparable, JSON round-trippable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .corruption import EmbeddingNoise


class DataError(ValueError):
    """A contrast set that cannot be used as given; the message names the prompt and the fix.

    Examples:
        >>> import causalinterp as ci
        >>> try:
        ...     ci.ContrastSet.from_tokens(clean=[[1, 2, 3]], corrupt=[[1, 2]], answer=[3])
        ... except ci.DataError as e:
        ...     print(str(e)[:40])
        prompt 0: clean has 3 tokens but corrupt
    """


def _token(t, what: str) -> int:
    """A token id as an int: numpy/torch ints are fine; floats and booleans are refused (no silent rounding)."""
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
        raise DataError(f"{what} is {t!r} ({type(t).__name__}); token ids and positions must be integers")
    return int(t)


def _as_rows(x, what: str) -> tuple[tuple[int, ...], ...]:
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    elif isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise DataError(f"{what} must be a list of token-id lists (or a 2-D tensor), got {type(x).__name__}")
    rows = []
    for i, row in enumerate(x):
        if isinstance(row, (torch.Tensor, np.ndarray)):
            row = row.tolist()
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise DataError(f"{what}[{i}] must be a list of token ids; for text use ContrastSet.from_text(tokenizer, ...)")
        if len(row) == 0:
            raise DataError(f"{what}[{i}] is empty: every prompt needs at least one token")
        rows.append(tuple(_token(t, f"{what}[{i}][{j}]") for j, t in enumerate(row)))
    return tuple(rows)


def _per_prompt(x, n: int, what: str) -> tuple[int, ...] | None:
    if x is None:
        return None
    if isinstance(x, (torch.Tensor, np.ndarray)):
        x = x.reshape(-1).tolist() if x.ndim <= 1 else x.tolist()
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return (int(x),) * n
    x = list(x)
    if len(x) != n:
        raise DataError(f"{what} has {len(x)} entries but there are {n} prompts: give one token id per prompt")
    out = []
    for i, a in enumerate(x):
        if isinstance(a, (list, tuple)):
            if len(a) != 1:
                raise DataError(f"{what}[{i}] is {len(a)} tokens {list(a)}; the metric reads one next token. "
                                "Use a single-token answer (for text answers, often with a leading space).")
            a = a[0]
        out.append(_token(a, f"{what}[{i}]"))
    return tuple(out)


@dataclass(frozen=True)
class ContrastSet:
    """Clean/corrupt prompt pairs as token ids.

    clean, corrupt  one token-id tuple per prompt; a pair must have the same length (prompts may
                    differ in length from each other: they are right-padded, and causal attention
                    keeps padding from affecting real tokens)
    answer, wrong   one token id per prompt: the correct and incorrect next token the metric reads
    positions       named positions: name -> one index per prompt (``end`` is always present)
    clusters        optional group id per prompt (e.g. template), used for cluster bootstrap

    Examples:
        >>> import causalinterp as ci
        >>> data = ci.ContrastSet.from_tokens(clean=[[5, 6, 7], [5, 8, 7]], corrupt=[[5, 9, 7], [5, 10, 7]],
        ...                                   answer=[6, 8], wrong=[9, 10], positions={"subject": [1, 1]})
        >>> data.n, data.positions["end"]
        (2, (2, 2))
    """

    clean: tuple[tuple[int, ...], ...]
    corrupt: tuple[tuple[int, ...], ...]
    answer: tuple[int, ...]
    wrong: tuple[int, ...] | None = None
    positions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    clusters: tuple | None = None
    name: str = ""
    corruption: EmbeddingNoise | None = None   # noise on the corrupt run's input embeddings (causal tracing)

    def __post_init__(self):
        n = len(self.clean)
        if n == 0:
            raise DataError("the contrast set is empty: give at least one clean/corrupt prompt pair")
        if len(self.corrupt) != n:
            raise DataError(f"{n} clean prompts but {len(self.corrupt)} corrupt prompts: give one corrupt prompt "
                            "per clean prompt")
        for i, (c, r) in enumerate(zip(self.clean, self.corrupt)):
            if len(c) != len(r):
                raise DataError(f"prompt {i}: clean has {len(c)} tokens but corrupt has {len(r)}; patching needs "
                                "aligned positions, so make each corrupt prompt the same length as its clean prompt")
        if len(self.answer) != n:
            raise DataError(f"answer has {len(self.answer)} entries for {n} prompts")
        if self.wrong is not None and len(self.wrong) != n:
            raise DataError(f"wrong has {len(self.wrong)} entries for {n} prompts")
        if self.clusters is not None and len(self.clusters) != n:
            raise DataError(f"clusters has {len(self.clusters)} entries for {n} prompts")
        lengths = self.lengths
        named = {}
        for key, idx in dict(self.positions).items():
            if key in ("all",):
                raise DataError("'all' is reserved (it means every position at once); rename that position")
            if isinstance(idx, (int, np.integer)) and not isinstance(idx, (bool, np.bool_)):
                idx = (idx,) * n
            idx = tuple(_token(i, f"named position {key!r}[{j}]") for j, i in enumerate(idx))
            if len(idx) != n:
                raise DataError(f"named position {key!r} has {len(idx)} entries for {n} prompts")
            fixed = []
            for i, (p, L) in enumerate(zip(idx, lengths)):
                if not -L <= p < L:
                    raise DataError(f"prompt {i}: named position {key!r} = {p} is out of range for a prompt of "
                                    f"{L} tokens")
                fixed.append(p % L)
            named[key] = tuple(fixed)
        named.setdefault("end", tuple(L - 1 for L in lengths))
        object.__setattr__(self, "positions", named)
        if self.clusters is not None:
            object.__setattr__(self, "clusters", tuple(self.clusters))
        if self.corruption is not None:
            object.__setattr__(self, "corruption", EmbeddingNoise.from_dict(self.corruption))
            if self.corrupt != self.clean:
                raise DataError("with an embedding-noise corruption the corrupt prompts are the clean prompts plus "
                                "noise; build it with contrast_set.with_noise(EmbeddingNoise(...))")
            self.corruption.indices(self)  # clear error for unknown or out-of-range positions

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_tokens(cls, clean, corrupt, answer, wrong=None, positions=None, clusters=None,
                    name: str = "") -> "ContrastSet":
        """Build from token ids: `clean`/`corrupt` as lists of lists or [n, T] tensors, one answer per prompt."""
        clean_rows = _as_rows(clean, "clean")
        corrupt_rows = _as_rows(corrupt, "corrupt")
        n = len(clean_rows)
        return cls(clean_rows, corrupt_rows, _per_prompt(answer, n, "answer"), _per_prompt(wrong, n, "wrong"),
                   {k: tuple(v) if not isinstance(v, int) else (v,) * n for k, v in (positions or {}).items()},
                   None if clusters is None else tuple(clusters), name)

    @classmethod
    def from_text(cls, tokenizer, clean: Sequence[str], corrupt: Sequence[str], answer: Sequence[str],
                  wrong: Sequence[str] | None = None, positions=None, clusters=None, name: str = "") -> "ContrastSet":
        """Tokenise prompts (no special tokens added); answers must each be exactly one token."""
        if isinstance(clean, str) or isinstance(corrupt, str):
            raise DataError("clean/corrupt must be lists of strings, not a single string")
        unk = getattr(tokenizer, "unk_token_id", None)
        unk_text = getattr(tokenizer, "unk_token", None)

        def encode(t, what):
            ids = tokenizer.encode(t, add_special_tokens=False)
            if unk is not None and unk in ids and not (unk_text and unk_text in t):
                pieces = tokenizer.convert_ids_to_tokens(ids) if hasattr(tokenizer, "convert_ids_to_tokens") else ids
                raise DataError(f"{what} ({t!r}) contains text the tokenizer does not know: it became the unknown "
                                f"token {unk_text!r} ({pieces}). Every unknown word would be the same token, so the "
                                "prompts would silently lose information; use words in the tokenizer's vocabulary")
            return ids

        def one_token(texts, what):
            if texts is None:
                return None
            if isinstance(texts, str):
                texts = [texts] * len(clean)
            out = []
            for i, t in enumerate(texts):
                ids = encode(t, f"{what} {i}")
                if len(ids) != 1:
                    pieces = tokenizer.convert_ids_to_tokens(ids) if hasattr(tokenizer, "convert_ids_to_tokens") else ids
                    raise DataError(f"{what}[{i}] = {t!r} is {len(ids)} tokens {pieces}; the metric reads one next "
                                    "token. Choose a single-token answer (GPT-2-style tokenizers usually need a "
                                    "leading space, e.g. ' Mary').")
                out.append(ids[0])
            return out

        return cls.from_tokens([encode(t, f"clean prompt {i}") for i, t in enumerate(clean)],
                               [encode(t, f"corrupt prompt {i}") for i, t in enumerate(corrupt)],
                               one_token(answer, "answer"), one_token(wrong, "wrong"), positions, clusters, name)

    # --- views ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.clean)

    @property
    def n(self) -> int:
        return len(self.clean)

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.clean)

    def position_index(self, position, prompt: int) -> int:
        """Absolute token index of an int (negative from this prompt's end) or named position."""
        L = len(self.clean[prompt])
        if isinstance(position, str):
            if position not in self.positions:
                from .schema import did_you_mean
                raise DataError(f"unknown named position {position!r}{did_you_mean(position, self.positions)}; "
                                f"this data has {sorted(self.positions)}")
            return self.positions[position][prompt]
        p = _token(position, "position")
        if not -L <= p < L:
            raise DataError(f"position {p} is out of range for prompt {prompt}, which has {L} tokens (valid: "
                            f"{-L}..{L - 1}; negative positions count from the prompt's end)")
        return p % L

    def tokens(self, which: str, pad: int = 0) -> torch.Tensor:
        """Right-padded [n, T_max] tensor of the clean or corrupt prompts."""
        rows = self.clean if which == "clean" else self.corrupt
        T = max(self.lengths)
        out = torch.full((len(rows), T), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out

    def subset(self, idx: Sequence[int]) -> "ContrastSet":
        """The prompts at `idx`, in that order."""
        idx = list(idx)
        pick = lambda t: None if t is None else tuple(t[i] for i in idx)  # noqa: E731
        return ContrastSet(pick(self.clean), pick(self.corrupt), pick(self.answer), pick(self.wrong),
                           {k: pick(v) for k, v in self.positions.items()}, pick(self.clusters), self.name,
                           self.corruption)

    def with_noise(self, corruption) -> "ContrastSet":
        """The same prompts with an embedding-noise corrupt run (causal tracing) instead of the corrupt prompts:
        ``data.with_noise(EmbeddingNoise(positions=["S1"], scale=3))``; the noise of prompt i is seeded per prompt."""
        from dataclasses import replace
        return replace(self, corrupt=self.clean, corruption=EmbeddingNoise.from_dict(corruption))

    def check_context(self, max_len: int | None) -> None:
        """Clear error when a prompt is longer than the model's context (positions beyond it do not exist)."""
        if max_len is None:
            return
        L = max(self.lengths)
        if L > max_len:
            i = self.lengths.index(L)
            raise DataError(f"prompt {i} has {L} tokens but the model's context holds {max_len}; shorten the "
                            "prompts (or use a model with a longer context)")

    def split(self, fraction: float = 0.5, seed: int = 0, by: str = "cluster") -> tuple["ContrastSet", "ContrastSet"]:
        """(discovery, confirmation) parts, whole clusters on one side (`causalinterp.selection.split`)."""
        from ..selection import split
        return split(self, fraction, seed, by)

    def check_vocab(self, vocab_size: int) -> None:
        """Clear error when a token id does not exist in the model's vocabulary."""
        for what, rows in (("clean", self.clean), ("corrupt", self.corrupt)):
            for i, r in enumerate(rows):
                bad = [t for t in r if not 0 <= t < vocab_size]
                if bad:
                    raise DataError(f"{what} prompt {i} has token ids {bad[:5]} outside the model's vocabulary "
                                    f"(0..{vocab_size - 1}); was it tokenised with another tokenizer?")
        for what, ids in (("answer", self.answer), ("wrong", self.wrong or ())):
            bad = [(i, t) for i, t in enumerate(ids) if not 0 <= t < vocab_size]
            if bad:
                raise DataError(f"{what} token id {bad[0][1]} (prompt {bad[0][0]}) is outside the model's vocabulary "
                                f"(0..{vocab_size - 1})")

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"clean": [list(r) for r in self.clean], "corrupt": [list(r) for r in self.corrupt],
                "answer": list(self.answer), "wrong": None if self.wrong is None else list(self.wrong),
                "positions": {k: list(v) for k, v in self.positions.items()},
                "clusters": None if self.clusters is None else list(self.clusters), "name": self.name,
                **({"corruption": self.corruption.to_dict()} if self.corruption is not None else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ContrastSet":
        """Inverse of `to_dict`, validated like a file (unknown keys and wrong types are errors)."""
        from .schema import spec_files
        files = spec_files()
        return files.validate(files.ContrastSetSpec, d, DataError, "data")
