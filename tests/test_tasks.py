"""Dataset generators: valid, reproducible contrast sets for any tokenizer."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import re  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from causalinterp.spec.data import ContrastSet, DataError  # noqa: E402
from causalinterp.tasks import (ABBA_TEMPLATES, BABA_TEMPLATES, NAMES, OBJECTS, PLACES, TEMPLATES,  # noqa: E402
                                induction, ioi, single_token_names)
from causalinterp.testbeds.train import build_tokenizer, induction_words, ioi_words, wrap_tokenizer  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def word_tok():
    return wrap_tokenizer(build_tokenizer(ioi_words()))


@pytest.fixture(scope="module")
def bpe_tok():
    """A GPT-2-style byte-level BPE tokenizer trained here on IOI text (names carry a leading space; with a small
    vocabulary some names stay multi-token, which the generator must drop)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    texts = []
    for i, name in enumerate(NAMES):
        reps = 40 if i % 3 else 1  # every third name is rare, so stays split into pieces
        texts += [f"Then, {name} and {NAMES[(i + 7) % len(NAMES)]} went to the {PLACES[i % 8]}. {name} gave a "
                  f"{OBJECTS[i % 8]} to"] * reps
    texts += [t.replace("[A]", "Kim").replace("[B]", "Lee").replace("[PLACE]", p).replace("[OBJECT]", o)
              for t in TEMPLATES.values() for p in PLACES for o in OBJECTS]
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(texts * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk)


def _gpt2_tokenizer():
    try:
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained("gpt2", local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the local cache: this test needs no download
        return None


# ------------------------------------------------------------------------------------------------
# templates and word lists
# ------------------------------------------------------------------------------------------------
def test_published_templates():
    assert len(BABA_TEMPLATES) == 15 and len(ABBA_TEMPLATES) == 15 and len(TEMPLATES) == 30
    assert len(NAMES) == len(set(NAMES)) == 99  # the published list
    assert ABBA_TEMPLATES[0] == "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to [A]"
    for baba, abba in zip(BABA_TEMPLATES, ABBA_TEMPLATES):
        assert abba.replace("[A]", "X").replace("[B]", "X") == baba.replace("[A]", "X").replace("[B]", "X")
        slots_b = re.findall(r"\[A\]|\[B\]", baba)
        slots_a = re.findall(r"\[A\]|\[B\]", abba)
        assert slots_b[:2] == ["[B]", "[A]"] and slots_a[:2] == ["[A]", "[B]"] and slots_a[2:] == slots_b[2:]


def test_readme_example(word_tok):
    data = ioi(word_tok, 40, templates=["ABBA-05"], seed=3)
    texts = [word_tok.decode(c) for c in data.clean]
    assert all(t.startswith("After ") and t.endswith(" to") for t in texts)
    assert set(data.clusters) == {"ABBA-05"}


# ------------------------------------------------------------------------------------------------
# IOI properties
# ------------------------------------------------------------------------------------------------
def _check_ioi(data: ContrastSet, tok, n: int, templates: str, corruption: str):
    assert isinstance(data, ContrastSet) and len(data) == n
    assert set(data.positions) >= {"IO", "S1", "S2", "end"}
    vocab_names = {tok.decode([t]).strip() for t in set(data.answer) | set(data.wrong)}
    assert vocab_names <= set(NAMES)
    for i in range(n):
        c, r = data.clean[i], data.corrupt[i]
        io, s1, s2, end = (data.positions[k][i] for k in ("IO", "S1", "S2", "end"))
        assert len(c) == len(r) and end == len(c) - 1
        # positions land on the right tokens
        assert c[io] == data.answer[i] and c[s1] == c[s2] == data.wrong[i] != data.answer[i]
        assert tok.decode([c[io]]).strip() in NAMES and tok.decode([c[s2]]).strip() in NAMES
        # answers are single tokens: the answer token ends the answered sentence
        text = tok.decode(list(c))
        name = tok.decode([data.answer[i]]).strip()
        assert tok.encode(text + " " + name, add_special_tokens=False)[-1] == data.answer[i]
        # template family sets the order of the first clause
        tid = data.clusters[i]
        assert tid in TEMPLATES
        if templates != "mixed":
            assert tid.startswith(templates)
        assert (io < s1) if tid.startswith("ABBA") else (s1 < io)
        assert s2 > max(io, s1)
        # corrupt differs from clean only at the three name positions
        assert all(c[k] == r[k] for k in range(len(c)) if k not in (io, s1, s2))
        if corruption == "ABC":
            new = (r[io], r[s1], r[s2])
            assert len(set(new)) == 3 and not set(new) & {data.answer[i], data.wrong[i]}
            assert all(tok.decode([t]).strip() in NAMES for t in new)
        else:
            assert r[io] == data.wrong[i] and r[s1] == r[s2] == data.answer[i]


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), templates=st.sampled_from(["mixed", "BABA", "ABBA"]),
       corruption=st.sampled_from(["ABC", "swap"]))
def test_ioi_properties_word_level(word_tok, seed, n, templates, corruption):
    data = ioi(word_tok, n, templates=templates, corruption=corruption, seed=seed)
    _check_ioi(data, word_tok, n, templates, corruption)
    assert data == ioi(word_tok, n, templates=templates, corruption=corruption, seed=seed)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), templates=st.sampled_from(["mixed", "BABA", "ABBA"]),
       corruption=st.sampled_from(["ABC", "swap"]))
def test_ioi_properties_bpe(bpe_tok, seed, n, templates, corruption):
    data = ioi(bpe_tok, n, templates=templates, corruption=corruption, seed=seed)
    _check_ioi(data, bpe_tok, n, templates, corruption)
    # BPE names are the leading-space token
    assert all(bpe_tok.convert_ids_to_tokens(a).startswith("Ġ") for a in data.answer)


def test_bpe_drops_multi_token_names(bpe_tok):
    kept = single_token_names(bpe_tok)
    assert 10 <= len(kept) < len(NAMES)
    for name in kept:
        assert len(bpe_tok.encode(" " + name, add_special_tokens=False)) == 1
    for name in set(NAMES) - set(kept):
        assert len(bpe_tok.encode(" " + name, add_special_tokens=False)) > 1
    data = ioi(bpe_tok, 200, seed=0)
    used = {bpe_tok.decode([t]).strip() for t in data.answer + data.wrong}
    assert used <= set(kept)


def test_ioi_reproducible_and_seeded(word_tok):
    a = ioi(word_tok, 50, seed=7)
    assert a == ioi(word_tok, 50, seed=7)
    assert a != ioi(word_tok, 50, seed=8)
    assert ContrastSet.from_dict(a.to_dict()) == a


def test_ioi_templates_balanced(word_tok):
    data = ioi(word_tok, 90, seed=1)
    counts = {t: data.clusters.count(t) for t in set(data.clusters)}
    assert len(counts) == 30 and set(counts.values()) == {3}
    lengths = set(data.lengths)
    assert len(lengths) > 1  # prompts differ in length from each other; pairs do not


def test_ioi_raw_tokenizers_object():
    tk = build_tokenizer(ioi_words())
    data = ioi(tk, 10, seed=0)
    assert data == ioi(wrap_tokenizer(tk), 10, seed=0)


def test_ioi_errors(word_tok):
    induction_tok = wrap_tokenizer(build_tokenizer(induction_words()))
    with pytest.raises(DataError, match="single token"):
        ioi(induction_tok, 5)  # no names in its vocabulary (all map to <unk>)
    with pytest.raises(DataError, match="corruption"):
        ioi(word_tok, 5, corruption="shuffle")
    with pytest.raises(DataError, match="templates"):
        ioi(word_tok, 5, templates="CBA")
    with pytest.raises(DataError, match="IOI template"):
        ioi(word_tok, 5, templates=["[A] likes [PLACE]"])
    with pytest.raises(DataError, match="positive"):
        ioi(word_tok, 0)
    with pytest.raises(DataError, match="single token"):
        ioi(word_tok, 5, names=["Mary", "John", "Zzyzx"])
    ok = ioi(word_tok, 5, names=["Mary", "John", "Lisa", "Paul", "Amy"], min_names=5)
    assert len(ok) == 5


def test_ioi_custom_template(word_tok):
    data = ioi(word_tok, 8, templates=["When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to [A]"],
               corruption="swap")
    assert set(data.clusters) == {"custom-00"}
    assert all(data.positions["IO"][i] == 1 and data.positions["S1"][i] == 3 for i in range(8))


def test_ioi_gpt2_tokenizer_if_cached():
    tok = _gpt2_tokenizer()
    if tok is None:
        pytest.skip("no GPT-2 tokenizer in the local Hugging Face cache (tests never download)")
    data = ioi(tok, 60, seed=0)
    _check_ioi(data, tok, 60, "mixed", "ABC")
    assert tok.decode([data.answer[0]]).startswith(" ")


# ------------------------------------------------------------------------------------------------
# induction properties
# ------------------------------------------------------------------------------------------------
def _check_induction(data: ContrastSet, n: int, L: int, bos):
    off = 0 if bos is None else 1
    assert len(data) == n
    for i in range(n):
        c, r = data.clean[i], data.corrupt[i]
        assert len(c) == len(r) == off + 2 * L - 1
        if bos is not None:
            assert c[0] == r[0] == bos
        seq = c[off:off + L]
        assert len(set(seq)) == L
        assert list(c[off + L:]) == list(seq[:-1])
        assert data.answer[i] == seq[-1] == c[data.positions["first_answer"][i]]
        assert c[data.positions["first_end"][i]] == c[data.positions["end"][i]] == seq[-2]
        for k in range(L - 1):
            assert c[data.positions[f"rep{k}"][i]] == seq[k]
        assert data.positions["end"][i] == data.positions[f"rep{L - 2}"][i] == len(c) - 1
        # corrupt: same first half, a fresh second half: nothing in it occurred before
        assert r[:off + L] == c[:off + L]
        fresh = r[off + L:]
        assert len(set(fresh)) == len(fresh) and not set(fresh) & set(seq)
        assert data.wrong[i] not in set(c) | set(r)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), L=st.integers(2, 25), vocab=st.integers(51, 500),
       bos=st.sampled_from([None, 0]))
def test_induction_properties_vocab(seed, n, L, vocab, bos):
    data = induction(vocab, n, seq_len=L, seed=seed, bos=bos)
    _check_induction(data, n, L, bos)
    assert all(0 <= t < vocab for row in data.clean + data.corrupt for t in row)
    if bos is not None:
        assert all(bos not in row[1:] for row in data.clean + data.corrupt)
    assert data == induction(vocab, n, seq_len=L, seed=seed, bos=bos)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20), L=st.integers(2, 20))
def test_induction_properties_tokenizer(seed, n, L):
    tok = wrap_tokenizer(build_tokenizer(induction_words()))
    data = induction(tok, n, seq_len=L, seed=seed)
    _check_induction(data, n, L, tok.bos_token_id)
    specials = set(tok.all_special_ids)
    assert all(t not in specials for row in data.clean for t in row[1:])


def test_induction_errors_and_seeds():
    assert induction(100, 20, seq_len=8, seed=1) != induction(100, 20, seq_len=8, seed=2)
    with pytest.raises(DataError, match="distinct tokens"):
        induction(10, 3, seq_len=8)
    with pytest.raises(DataError, match="seq_len"):
        induction(100, 3, seq_len=1)
    with pytest.raises(DataError, match="positive"):
        induction(100, 0, seq_len=4)
    d = induction(100, 4, seq_len=5, tokens=range(50, 60), bos=None)
    assert all(50 <= t < 60 for row in d.clean for t in row)
