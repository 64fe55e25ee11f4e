"""`causalinterp init`: the scaffold for a user's model, and the name-copying task it uses for real tokenizers."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import causalinterp as ci
from causalinterp.cli import collect, main
from causalinterp.scaffold import InitError, choose_task, init_project
from causalinterp.spec.data import DataError

ROOT = Path(__file__).resolve().parents[1]


def shared_models() -> Path:
    """shared/models beside the checkout (CI's clone), else $CAUSALINTERP_SHARED or /work/shared."""
    beside = ROOT.parent / "shared" / "models"
    if beside.is_dir():
        return beside
    return Path(os.environ.get("CAUSALINTERP_SHARED", "/work/shared")) / "models"


STORIES = shared_models() / "stories260K"
needs_stories = pytest.mark.skipif(not (STORIES / "config.json").is_file(),
                                   reason=f"the real model is not here ({STORIES}); clone with shared/ beside it")


@pytest.fixture(scope="module")
def stories_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(STORIES)


def run_pytest(folder: Path, *args) -> subprocess.CompletedProcess:
    """pytest on the scaffold in a fresh process, as a user runs it (this checkout's package on the path)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider", *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=900)


@needs_stories
def test_name_copy_prompts_copy_a_two_token_name(stories_tokenizer):
    tok = stories_tokenizer
    data = ci.tasks.name_copy(tok, 24, seed=3)
    assert data.n == 24 and data.clusters is None
    for i in range(data.n):
        clean, corrupt = list(data.clean[i]), list(data.corrupt[i])
        # the clean story with its answer appended spells a name whose last mention is complete
        story = tok.decode(clean + [data.answer[i]])
        other = tok.decode(corrupt + [data.wrong[i]])
        name = story.split()[-1]
        assert len(tok.encode(" " + name, add_special_tokens=False)) == 2
        assert story.count(name) >= 2 and other.split()[-1] != name
        # clean and corrupt differ only inside the name's earlier mentions; the first difference is `name`
        diff = [j for j, (a, b) in enumerate(zip(clean, corrupt)) if a != b]
        assert diff and diff[0] == data.positions["name"][i] and data.answer[i] != data.wrong[i]
        assert clean[-1] == corrupt[-1]  # both end with the name's shared first token


def test_name_copy_needs_two_token_names():
    word_level = ci.testbeds.tokenizer("induction")  # made-up names are unknown words there
    with pytest.raises(DataError, match="two-token names"):
        ci.tasks.name_copy(word_level, 4)
    with pytest.raises(DataError, match="end with it"):
        ci.tasks.name_copy(word_level, 4, templates=["{N} went home."])


def test_task_fits_the_model():
    assert choose_task(ci.load_model("testbed:induction"), "testbed:induction")[0] == "induction"
    assert choose_task(ci.load_model("testbed:ioi"), "testbed:ioi")[0] == "ioi"


@needs_stories
def test_task_for_a_sentencepiece_model_is_name_copy():
    task, why = choose_task(ci.load_model(str(STORIES)), str(STORIES))
    assert task == "name_copy" and "two" in why


def test_init_writes_valid_files_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    assert main(["init", str(out), "--model", "testbed:ioi"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert {"README.md", "hyp_ioi.yaml", "test_ioi.py"} <= set(names)
    assert "pytest" in (out / "README.md").read_text() and "wrote" in capsys.readouterr().out
    hs = ci.load_hypotheses(out / "hyp_ioi.yaml")
    assert [h.model for h in hs] == ["testbed:ioi"] * 2 and hs[0].joint
    entries = collect([out])  # the YAML and the decorated Python function, as the CLI and plugin see them
    assert len(entries) == 3
    assert main(["init", str(out), "--model", "testbed:ioi"]) == 2
    assert "--force" in capsys.readouterr().err
    with pytest.raises(InitError):
        init_project(out, "testbed:ioi")
    assert init_project(out, "testbed:ioi", force=True)


def test_init_then_pytest_on_a_testbed(tmp_path):
    out = tmp_path / "tests_for_my_model"
    init_project(out, "testbed:induction")
    proc = run_pytest(out, "-rA")
    text = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), text  # 1 = a refuted claim: an honest verdict, not an error
    assert "causalinterp hypotheses" in text and "error" not in text.lower().split("short test summary")[0], text
    # the setup check patches the whole layer-0 residual stream: the corrupt run becomes the clean run
    assert re.search(r"SUPPORTED\s+the patch reaches the model \(setup check\)\s+recovery 1 \[1, 1\]", text), text


@pytest.mark.slow
@needs_stories
def test_init_then_pytest_on_stories260k(tmp_path):
    out = tmp_path / "stories"
    assert main(["init", str(out), "--model", str(STORIES)]) == 0
    proc = run_pytest(out)
    text = proc.stdout + proc.stderr
    assert proc.returncode in (0, 1), text
    assert "the patch reaches the model (setup check)" in text and "3 hypotheses" in text, text
