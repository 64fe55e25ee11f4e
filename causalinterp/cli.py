"""Command line: ``causalinterp run | scan | report | replicate | demo | init | sitemap | schema``.

Every command calls the same Python API (`causalinterp.run_all`, `causalinterp.report`) and writes
DIR/index.html, DIR/report.md and DIR/results.json, then prints where the report is and a verdict table.

Everything is checked before any model loads: ``--out`` must be a writable directory and every hypothesis
file is validated completely.  If writing the report fails after the compute, results.json is saved in a
fresh directory and the error says where.

Exit codes: 0 when the command ran (verdicts are data, not errors); 2 on usage or input errors (missing
file, invalid YAML, unknown model, bad site name ...), reported as ``causalinterp: error: ...`` (one line
per problem);
with ``--strict``, 1 when any hypothesis is not supported (refuted, null or inconclusive), as
``pytest --causal-strict`` fails them.  ``--traceback`` shows the full traceback of an error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._version import __version__
# failure_message, site_table_text, verdict_lines, write_reports are importable from here as before.
from .report.text import failure_message, site_table_text, verdict_lines  # noqa: F401
from .session import SESSION_SCHEMA, write_reports  # noqa: F401

HYPOTHESIS_SUFFIXES = (".yaml", ".yml", ".json", ".py")


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit code 2."""


def _eprint(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- output

def _save_or_rescue(results, out, title) -> dict:
    """Write the report files; if that fails after the compute, save results.json elsewhere and say where."""
    from .session import rescue_results
    try:
        return write_reports(results, out, title)
    except OSError as e:
        reason = f"{type(e).__name__}: {e}"
    raise UsageError(f"could not write the report to {out} ({reason})" + rescue_results(results, title))


def _print_outcome(results, paths) -> None:
    header, rows, footer = verdict_lines(results)
    print(header)
    for line in rows:
        print(line)
    print(footer)
    print(f"report: {paths['html']}  (also {paths['markdown'].name}, {paths['json'].name})")


def _exit_code(results, strict: bool) -> int:
    return 1 if strict and any(r.verdict != "supported" for r in results) else 0


# ----------------------------------------------------------------------------- collecting hypotheses

def _hypothesis_files(path: Path) -> list[Path]:
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix not in HYPOTHESIS_SUFFIXES:
            raise UsageError(f"{path}: not a hypothesis file (expected {', '.join(HYPOTHESIS_SUFFIXES)})")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in HYPOTHESIS_SUFFIXES
                   and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
                   and p.name != "conftest.py" and not p.name.endswith(".schema.json"))  # editors' JSON Schema
    if not files:
        raise UsageError(f"{path}: no hypothesis files (*.yaml, *.yml, *.json, *.py) in this directory")
    return files


def _import_file(path: Path, index: int):
    import importlib.util
    name = f"_causalinterp_hypotheses_{index}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file: report it as input, in one line
        sys.modules.pop(name, None)
        raise UsageError(f"{path}: could not import: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(path.parent))
    return module


def _from_python(path: Path, index: int, override, models) -> list[tuple]:
    """(hypothesis, model spec, source) for decorated functions and module-level Hypothesis objects."""
    import inspect

    from .session import ATTR, hypotheses_from
    from .spec.hypothesis import Hypothesis
    module = _import_file(path, index)
    out, seen = [], set()

    def add(h, spec, where):
        if id(h) not in seen:
            seen.add(id(h))
            out.append((h, spec, where))

    for name, obj in list(vars(module).items()):
        if isinstance(obj, Hypothesis):
            add(obj, override or obj.model, f"{path}:{name}")
        elif isinstance(obj, (list, tuple)) and obj and all(isinstance(h, Hypothesis) for h in obj):
            for h in obj:
                add(h, override or h.model, f"{path}:{name}")
        elif callable(obj) and getattr(obj, ATTR, None) is not None and getattr(obj, "__module__", None) == module.__name__:
            where = f"{path}:{name}"
            spec = override or getattr(obj, ATTR)["model"]
            params = inspect.signature(obj).parameters
            needed = [p for p, v in params.items() if v.default is inspect.Parameter.empty
                      and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD) and p != "model"]
            if needed:
                raise UsageError(f"{where} takes {', '.join(needed)}: the CLI passes only `model`; run this file "
                                 "with pytest if it needs fixtures")
            if "model" in params:
                if spec is None:
                    raise UsageError(f"{where} takes `model` but names none: use @ci.hypothesis(model=...) or "
                                     "pass --model NAME")
                value = obj(model=_load(models, spec))
            else:
                value = obj()
            for h in hypotheses_from(value, f"{where}()"):
                add(h, spec or h.model, where)
    if not out:
        raise UsageError(f"{path}: no hypotheses found (define functions decorated with @ci.hypothesis or "
                         "module-level ci.Hypothesis objects)")
    return out


def collect(paths, override=None, models=None) -> list[tuple]:
    """(hypothesis, model spec, source) for every hypothesis in `paths` (files or directories)."""
    from .session import ModelCache
    from .spec.hypothesis import load_hypotheses
    models = ModelCache() if models is None else models
    entries = []
    files = [f for p in paths for f in _hypothesis_files(Path(p))]
    for i, f in enumerate(files):
        if f.suffix == ".py":
            entries += _from_python(f, i, override, models)
        else:
            entries += [(h, override or h.model, str(f)) for h in load_hypotheses(f)]
    for h, spec, where in entries:
        if spec is None:
            raise UsageError(f"hypothesis {h.name!r} ({where}) names no model: add `model:` to it (e.g. "
                             "model: testbed:induction) or pass --model NAME")
    return entries


def _load(models, spec):
    from .models.load import Model
    key = models.key(spec) if not isinstance(spec, Model) else None
    if key is not None and key not in models.models:
        _eprint(f"loading model {spec if isinstance(spec, str) else getattr(spec, '__name__', spec)} ...")
    return models.get(spec)


def _progress(args) -> bool:
    """Progress bars only on a terminal: in a log (CI, a pipe) their carriage returns garble the [i/n] lines."""
    return not args.no_progress and sys.stderr.isatty()


def _run_entries(entries, models, progress: bool, track=None, scale: dict | None = None):
    from .runner import run_all
    from .tracking import trackers
    track = trackers(track)  # made once, shared by every hypothesis
    results = []
    for i, (h, spec, _where) in enumerate(entries, 1):
        m = _load(models, spec)
        _eprint(f"[{i}/{len(entries)}] {h.name} ...")
        r = run_all([h], m, progress=progress, cache=models.cache, models=models.models, track=track,
                    **(scale or {}))[0]
        _eprint(f"[{i}/{len(entries)}] {h.name}: {r.verdict.upper()} ({r.meta.get('seconds', 0):.1f} s)")
        results.append(r)
    return results


# ----------------------------------------------------------------------------- commands

def _check_out(args) -> None:
    """--out must be a writable directory: checked before any hypothesis is read or run."""
    from .output import check_writable_dir
    try:
        check_writable_dir(args.out, "--out")
    except OSError as e:
        raise UsageError(str(e)) from None


def cmd_run(args) -> int:
    from .session import ModelCache
    _check_out(args)
    scale = _scale(args)  # option errors before any model loads
    models = ModelCache()
    entries = collect(args.paths, args.model, models)
    results = _run_entries(entries, models, progress=_progress(args), track=getattr(args, "track", None),
                           scale=scale)
    paths = _save_or_rescue(results, args.out, args.title)
    _print_outcome(results, paths)
    return _exit_code(results, args.strict)


def _split(text):
    return [x.strip() for x in str(text).split(",") if x.strip()]


def _ints(text, what):
    if text is None:
        return None
    try:
        return tuple(int(x) for x in _split(text))
    except ValueError:
        raise UsageError(f"--{what} takes comma-separated integers (e.g. 0,1,2), got {text!r}") from None


def _positions(text, task):
    if text is None:
        return ("IO", "S1", "S2", "end") if task == "ioi" else None
    if text.strip() == "every":
        return None
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in _split(text))


def _claim(text):
    from .spec import claims
    kind, _, value = str(text).partition(":")
    kind = kind.strip()
    try:
        if kind == "has_effect":
            return claims.has_effect(value or "any")
        if kind == "recovers":
            return claims.recovers(float(value) if value else 0.5)
        if kind == "no_effect":
            return claims.no_effect(float(value) if value else 0.1)
        if kind == "beats_random":
            return claims.beats_random(int(value) if value else 200)
    except ValueError as e:
        raise UsageError(f"--claim {text!r}: {e}") from None
    raise UsageError(f"--claim {text!r}: unknown claim; use has_effect[:any|increase|decrease], recovers[:TAU], "
                     "no_effect[:MARGIN] or beats_random[:N]")


def cmd_scan(args) -> int:
    from .session import ModelCache
    from .spec.hypothesis import DataRef, Hypothesis
    from .spec.interventions import Intervention
    from .spec.metrics import Metric
    from .spec.sites import COMPONENTS, HEAD_COMPONENTS, SiteSet

    scale = _scale(args)  # option errors before any model loads
    components = _split(args.sites)
    bad = [c for c in components if c not in COMPONENTS]
    if bad or not components:
        raise UsageError(f"--sites {args.sites!r}: unknown site kind {bad[0] if bad else ''!r}; choose from "
                         f"{', '.join(COMPONENTS)} (comma-separated for several)")
    layers, heads = _ints(args.layers, "layers"), _ints(args.heads, "heads")
    positions = _positions(args.positions, args.task)
    if args.n < 2:
        raise UsageError(f"--n {args.n}: a test needs at least 2 prompts (20+ recommended)")
    _check_out(args)
    options = {"seq_len": args.seq_len} if args.task == "induction" and args.seq_len else {}
    data = DataRef(args.task, args.n, args.seed, options)
    claim = _claim(args.claim)
    intervention = Intervention(args.intervention, seed=args.seed)
    metric = Metric(args.metric)
    hs = [Hypothesis(name=f"{args.task}: {args.intervention} {c} scan ({claim.kind})", data=data,
                     sites=SiteSet(c, layers, heads if c in HEAD_COMPONENTS else None, positions), claim=claim,
                     intervention=intervention, metric=metric, alpha=args.alpha, correction=args.correction,
                     n_resamples=args.n_resamples, seed=args.seed, model=args.model) for c in components]
    models = ModelCache()
    entries = [(h, args.model, "scan") for h in hs]
    results = _run_entries(entries, models, progress=_progress(args), track=args.track, scale=scale)
    paths = _save_or_rescue(results, args.out, args.title or f"causalinterp scan: {args.task} on {args.model}")
    for r in results:
        print(f"{r.name}: {r.verdict.upper()}")
        print(site_table_text(r, max_rows=args.top))
        print()
    _print_outcome(results, paths)
    return _exit_code(results, args.strict)


def _load_results(files) -> list:
    """Results from result JSON files, each validated against the result schema; bad files are usage errors."""
    from .result import Result
    results = []
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise UsageError(f"{p}: no such file")
        try:
            loaded = Result.from_json(p)  # validated against the result schema (verdicts, statistics, fields)
        except json.JSONDecodeError as e:
            raise UsageError(f"{p}: not valid JSON ({e})") from None
        except ValueError as e:
            raise UsageError(f"{p}: {e}") from None
        results += loaded if isinstance(loaded, list) else [loaded]
    return results


def cmd_report(args) -> int:
    _check_out(args)
    results = _load_results(args.files)
    if not results:
        raise UsageError("the result files hold no results")
    paths = write_reports(results, args.out, args.title)
    _print_outcome(results, paths)
    return _exit_code(results, args.strict)


def _option(text: str) -> tuple[str, object]:
    import yaml
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--option {text!r}: write KEY=VALUE, e.g. --option corruption=swap or "
                         "--option 'templates=[BABA-05, ABBA-05]'")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def cmd_replicate(args) -> int:
    """Rerun each stored hypothesis on fresh prompts; write replication.{json,md,html}; print the tables."""
    from .replicate import replicate
    from .report.replication import html, markdown
    from .output import write_set
    from .spec.data import ContrastSet
    _check_out(args)
    results = _load_results(args.files)
    data = None
    if args.data:
        try:
            data = ContrastSet.from_dict(json.loads(Path(args.data).read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise UsageError(f"--data {args.data}: not a contrast-set JSON file ({type(e).__name__}: {e})") from None
    options = dict(_option(o) for o in args.option or [])
    from .session import ModelCache
    from .tracking import trackers
    models, track = ModelCache(), trackers(args.track)
    reps = []
    for i, r in enumerate(results, 1):
        spec = args.model or (r.hypothesis or {}).get("model") or (r.meta or {}).get("model")
        _eprint(f"[{i}/{len(results)}] replicating {r.name} ...")
        model = _load(models, spec) if spec else None
        reps.append(replicate(r, model, data=data, seed=args.seed, n=args.n, progress=_progress(args),
                              track=track, **options))
    out = Path(args.out)
    text = json.dumps({"schema": "causalinterp.replications/1", "replications": [x.to_dict() for x in reps]},
                      indent=1)
    try:  # rendered first, then written as a set
        write_set({out / "replication.json": text, out / "replication.md": markdown(reps, None, args.title),
                   out / "replication.html": html(reps, None, args.title)})
    except OSError as e:
        from .output import rescue_dir
        saved = rescue_dir() / "replication.json"
        write_set({saved: text})
        raise UsageError(f"could not write the replication report to {out} ({type(e).__name__}: {e}); the "
                         f"replications are saved in {saved}") from None
    for x in reps:
        print(x)
        print(x.text_table(max_rows=args.top))
        print()
    counts: dict = {}
    for x in reps:
        counts[x.verdict] = counts.get(x.verdict, 0) + 1
    print(f"{len(reps)} replication(s): " + ", ".join(f"{k} {v}" for v, k in counts.items()))
    print(f"report: {out / 'replication.html'}  (also replication.md, replication.json)")
    return 1 if args.strict and any(x.verdict != "replicated" for x in reps) else 0


def _demo_model():
    """The shipped induction testbed when present, else a GPT-2-architecture model built from a config."""
    import causalinterp as ci
    try:
        return ci.load_model("testbed:induction")
    except Exception:  # noqa: BLE001 - testbeds not built yet: fall back to random weights
        from transformers import GPT2Config, GPT2LMHeadModel
        return ci.load_model(GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=128)))


def cmd_sitemap(args) -> int:
    import causalinterp as ci
    name = args.model or args.model_pos
    model = ci.load_model(name) if name else _demo_model()
    print(model)
    print(model.site_map().to_string(index=False))
    if model.adapter.notes:
        print(f"notes: {model.adapter.notes}")
    return 0


def cmd_schema(args) -> int:
    """Print the JSON Schema of hypothesis files (for editors: VS Code's YAML extension and others)."""
    from .spec.files import hypothesis_json_schema
    print(json.dumps(hypothesis_json_schema(), indent=1))
    return 0


from .examples import HYPOTHESES as EXAMPLES  # noqa: E402 - package data: the example hypotheses
DEMO_TESTBEDS = ("induction", "ioi")


def cmd_demo(args) -> int:
    """`run examples/hypotheses --out DIR` against the shipped testbeds."""
    from . import testbeds
    if not EXAMPLES.is_dir():
        raise UsageError(f"the example hypotheses are not here ({EXAMPLES}): this installation of causalinterp is "
                         "incomplete; reinstall it (pip install --force-reinstall causalinterp) or run your own "
                         "files with: causalinterp run PATH --out DIR")
    have = set(testbeds.available())
    missing = [t for t in DEMO_TESTBEDS if t not in have]
    if missing:
        build = " and ".join(f"python -m causalinterp.testbeds.train {t}" for t in missing)
        raise UsageError(f"the shipped testbed(s) {', '.join(missing)} are missing; build them with {build} "
                         f"(or run: causalinterp run {EXAMPLES} --model NAME --out {args.out})")
    return cmd_run(argparse.Namespace(paths=[EXAMPLES], model=None, out=args.out, strict=False,
                                      no_progress=args.no_progress, title="causalinterp demo: shipped testbeds"))


def cmd_init(args) -> int:
    """Scaffold hypothesis tests for the user's model (causalinterp.scaffold)."""
    from .scaffold import init_project
    _eprint(f"loading model {args.model} ...")
    files = init_project(args.dir, args.model, force=args.force)
    for f in files:
        print(f"wrote {f}")
    print(f"next: pytest {args.dir}   (or: causalinterp run {args.dir} --out reports)")
    return 0


# ----------------------------------------------------------------------------- parser

MODEL_HELP = "hub id (e.g. gpt2), local path of a saved model, or testbed:NAME (e.g. testbed:induction)"


def _track_option(p):
    p.add_argument("--track", metavar="KIND[,KIND]", default=None,
                   help="log every hypothesis (spec, seeds, versions, verdict, estimates, CIs, p-values, report) to "
                        "mlflow (MLFLOW_TRACKING_URI, else ./mlruns) and/or wandb (offline unless WANDB_MODE=online)")


def _common(p, out_default="reports"):
    p.add_argument("--out", metavar="DIR", default=out_default,
                   help=f"directory for index.html, report.md and results.json (default: {out_default})")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any hypothesis is not supported (refuted, null or inconclusive); without "
                        "it the exit code is 0 whatever the verdicts")


def _scale_options(p):
    """Where the scans' units run, and the results directory that makes a run resumable."""
    g = p.add_argument_group("scale-out")
    g.add_argument("--executor", default="local", choices=["local", "ray", "slurm"],
                   help="who computes the units: this process (default), Ray actors, or a SLURM job array")
    g.add_argument("--workers", type=int, metavar="N",
                   help="ray: number of actors (default: the cluster's CPUs); slurm: array tasks (default: one per unit)")
    g.add_argument("--address", metavar="ADDR", help="ray: cluster address ('auto' joins a running cluster)")
    g.add_argument("--folder", metavar="DIR", help="slurm: shared folder for job files and logs")
    g.add_argument("--partition", metavar="P", help="slurm: partition to submit to")
    g.add_argument("--checkpoint", metavar="DIR",
                   help="results directory: finished units are stored there by content hash, and a rerun "
                        "(with any executor) computes only what is missing")


def _scale(args) -> dict:
    from . import executors
    if getattr(args, "executor", None) is None:  # commands without the scale-out options (demo)
        return {}
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: needs at least 1")
    if args.executor != "slurm" and (args.folder or args.partition):
        raise UsageError("--folder and --partition are for --executor slurm")
    if args.executor == "slurm" and not args.folder:
        raise UsageError("--executor slurm needs --folder DIR (a shared folder for job files and logs)")
    if args.executor != "ray" and args.address:
        raise UsageError("--address is for --executor ray")
    executor = executors.from_name(args.executor, workers=args.workers, folder=args.folder,
                                   partition=args.partition, address=args.address)
    return {"executor": executor, "checkpoint": args.checkpoint}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="causalinterp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an error (for bug reports)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run hypothesis files (YAML/JSON/Python) and write a report",
                       description="Run hypotheses from YAML/JSON files (one hypothesis, or a list under "
                                   "`hypotheses:`) and Python files (functions decorated with @ci.hypothesis and "
                                   "module-level ci.Hypothesis objects).  Directories are searched recursively.")
    r.add_argument("paths", nargs="+", metavar="PATH", help="hypothesis files or directories")
    r.add_argument("--model", help=f"run every hypothesis on this model instead of the one it names: {MODEL_HELP}")
    _common(r)
    r.add_argument("--title", default="causalinterp hypotheses", help="report title")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are shown only when stderr is a terminal)")
    _track_option(r)
    _scale_options(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("scan", help="sweep one kind of site over layers/heads/positions on a task, with statistics",
                       description="Build a task's contrast set for the model, intervene on every site of the "
                                   "given kind(s) and test the claim at each site (corrected over the sweep).")
    s.add_argument("--task", required=True, choices=["ioi", "induction"], help="the contrast set to build")
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--sites", required=True, metavar="KIND[,KIND]",
                   help="site kind(s): resid_pre, resid_mid, resid_post, attn_out, mlp_out, head_out, q, k, v")
    s.add_argument("--layers", metavar="L,L", help="layers to scan (default: every layer)")
    s.add_argument("--heads", metavar="H,H", help="heads, for head_out/q/k/v (default: every head)")
    s.add_argument("--positions", metavar="P,P",
                   help="token positions: ints (negative from the end), named positions of the task (ioi: IO, S1, "
                        "S2, end; induction: end, first_answer, ...), 'all' (every position at once) or 'every' "
                        "(one site per position). Default: ioi IO,S1,S2,end; induction every")
    s.add_argument("--n", type=int, default=32, help="number of prompt pairs (default: 32)")
    s.add_argument("--seed", type=int, default=0, help="seed of the data, resampling and statistics (default: 0)")
    s.add_argument("--seq-len", type=int, default=None, help="induction: length of the repeated sequence")
    s.add_argument("--intervention", default="denoise", choices=["denoise", "noise", "zero", "mean", "resample"],
                   help="denoise: clean activation into the corrupt run (sufficiency); noise: corrupt into clean "
                        "(necessity); zero/mean/resample: ablations of the clean run (default: denoise)")
    s.add_argument("--metric", default="logit_diff", choices=["logit_diff", "logprob", "prob", "kl_to_clean",
                                                              "accuracy"],
                   help="what is measured at the last position (default: logit_diff = answer - wrong logit)")
    s.add_argument("--claim", default="has_effect", metavar="CLAIM",
                   help="tested at each site: has_effect[:any|increase|decrease], recovers[:TAU] (e.g. "
                        "recovers:0.5), no_effect[:MARGIN] or beats_random[:N] (default: has_effect)")
    s.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    s.add_argument("--correction", default="holm", choices=["holm", "maxT", "fdr_bh", "bonferroni", "none"],
                   help="multiple-comparison correction over the sites (default: holm; maxT = Westfall-Young, "
                        "permutation-based family-wise control that stays powerful for hundreds of sites)")
    s.add_argument("--n-resamples", type=int, default=9999, help="permutation/bootstrap resamples (default: 9999)")
    s.add_argument("--top", type=int, default=15, help="site rows to print per scan (default: 15)")
    _common(s)
    s.add_argument("--title", default=None, help="report title")
    s.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are shown only when stderr is a terminal)")
    _track_option(s)
    _scale_options(s)
    s.set_defaults(func=cmd_scan)

    rp = sub.add_parser("report", help="rebuild the report from results.json / result JSON files",
                        description="Read results written by `causalinterp run/scan`, `pytest --causal-report` "
                                    "or Result.to_json, and write the HTML/Markdown report.")
    rp.add_argument("files", nargs="+", metavar="RESULT.json", help="result or session JSON files")
    _common(rp)
    rp.add_argument("--title", default="causalinterp report", help="report title")
    rp.set_defaults(func=cmd_report)

    rr = sub.add_parser("replicate", help="rerun stored hypotheses on fresh prompts and compare side by side",
                        description="Rerun every hypothesis in the result JSON files on fresh prompts (a new data "
                                    "seed, other task options such as held-out templates or another corruption, or "
                                    "prompts you give) with everything else unchanged, and report per site whether "
                                    "the verdict replicated, both estimates with CIs, and a verdict on replication.")
    rr.add_argument("files", nargs="+", metavar="RESULT.json", help="result or session JSON files")
    rr.add_argument("--seed", type=int, default=None, help="new data seed (default: the original seed + 1)")
    rr.add_argument("--n", type=int, default=None, help="number of fresh prompts (default: as in the original)")
    rr.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="task option for the fresh data (repeatable), e.g. corruption=swap or "
                         "'templates=[BABA-05, ABBA-05]' (the value is read as YAML)")
    rr.add_argument("--data", metavar="FILE.json", help="fresh prompts as a contrast-set JSON (ContrastSet.to_dict), "
                                                        "needed when the original prompts were given inline")
    rr.add_argument("--model", help=f"model to run on instead of the one each result names: {MODEL_HELP}")
    rr.add_argument("--out", metavar="DIR", default="reports",
                    help="directory for replication.html, replication.md and replication.json (default: reports)")
    rr.add_argument("--strict", action="store_true", help="exit 1 when any hypothesis did not replicate")
    rr.add_argument("--title", default="causalinterp replication", help="report title")
    rr.add_argument("--top", type=int, default=20, help="site rows to print per hypothesis (default: 20)")
    rr.add_argument("--no-progress", action="store_true", help="no progress bars")
    _track_option(rr)
    rr.set_defaults(func=cmd_replicate)

    d = sub.add_parser("demo", help="the README's main job: run the example hypotheses on the shipped testbeds",
                       description="Equivalent to `causalinterp run EXAMPLES --out reports`, where EXAMPLES is the "
                                   "folder of example hypotheses installed with the package "
                                   "(causalinterp.examples.HYPOTHESES; examples/hypotheses in a checkout).")
    d.add_argument("--out", metavar="DIR", default="reports", help="directory for the report (default: reports)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (they are shown only when stderr is a terminal)")
    d.set_defaults(func=cmd_demo)

    it = sub.add_parser("init", help="write hypothesis tests to start from for your model (YAML, Python, README)",
                        description="Load the model, pick a task whose prompts fit its tokenizer (IOI, name copying or "
                                    "induction) and write DIR/hyp_TASK.yaml and DIR/test_TASK.py with worked "
                                    "hypotheses, and a README on running them (pytest DIR).")
    it.add_argument("dir", nargs="?", default="causal_tests", metavar="DIR",
                    help="folder to write into (default: causal_tests)")
    it.add_argument("--model", required=True, help=MODEL_HELP)
    it.add_argument("--force", action="store_true", help="overwrite files that already exist")
    it.set_defaults(func=cmd_init)

    sm = sub.add_parser("sitemap", help="load a model and print its canonical sites and the modules they live in")
    sm.add_argument("model_pos", nargs="?", metavar="MODEL", help="same as --model")
    sm.add_argument("--model", help=f"{MODEL_HELP} (default: the shipped induction testbed)")
    sm.set_defaults(func=cmd_sitemap)

    sc = sub.add_parser("schema", help="print the JSON Schema of hypothesis files (causalinterp schema > "
                                       "hypothesis.schema.json)",
                        description="Print the JSON Schema of hypothesis files (YAML/JSON) on stdout, for editors "
                                    "that complete and check files against a schema (e.g. VS Code's YAML extension "
                                    "with `# yaml-language-server: $schema=./hypothesis.schema.json`).")
    sc.set_defaults(func=cmd_schema)
    _feature_parsers(sub)
    return p


def _feature_site(text):
    """``COMPONENT:LAYER[:HEAD]:POSITION`` (e.g. ``resid_post:1:end``, ``head_out:1:2:-1``) -> a Site."""
    from .spec.sites import Site
    parts = str(text).split(":")
    try:
        if len(parts) == 3:
            comp, layer, pos = parts
            head = None
        elif len(parts) == 4:
            comp, layer, head, pos = parts
            head = int(head)
        else:
            raise ValueError("expected 3 or 4 parts")
        return Site(comp, int(layer), head, int(pos) if pos.lstrip("-").isdigit() else pos)
    except ValueError as e:
        raise UsageError(f"--site {text!r}: {e}; write COMPONENT:LAYER[:HEAD]:POSITION, e.g. resid_post:1:end") from None


def _feature_data(args):
    """The task's prompts for `causalinterp das/probe`, split into (fit, held-out) halves."""
    from .models import load_model
    from .spec.hypothesis import DataRef
    if args.n < 8:
        raise UsageError(f"--n {args.n}: fitting and held-out testing need at least 8 prompts (100+ recommended)")
    model = load_model(args.model)
    if args.task == "copy_choice":
        from .features import copy_choice_data
        data = copy_choice_data(args.n, args.seed)
    else:
        data = DataRef(args.task, args.n, args.seed).build(model)
    return model, data.split(args.split, seed=args.seed)


def _write_json(path, obj) -> None:
    if path:
        from .output import write_atomic
        from .result import _plain
        write_atomic(Path(path), json.dumps(_plain(obj), indent=1))
        print(f"wrote {path}")


def cmd_das(args) -> int:
    from .features import das
    site = _feature_site(args.site)
    model, (train, test) = _feature_data(args)
    res = das(model, train, site, dim=args.dim, steps=args.steps, seed=args.seed)
    ev = res.evaluate(model, test, n_random=args.n_random, seed=args.seed, n_resamples=args.n_resamples)
    print(f"DAS at {site.label}, dim {args.dim}: fitted on {train.n} prompts (training IIA {res.train_iia:.3f})")
    print(ev)
    _write_json(args.json, {"site": site.to_dict(), "dim": args.dim, "n_train": train.n, "n_test": test.n,
                            "train_iia": res.train_iia, **ev.to_dict(), "basis": res.basis.tolist()})
    return 1 if args.strict and ev.verdict != "supported" else 0


def cmd_probe(args) -> int:
    from .features import probe
    site = _feature_site(args.site)
    model, (train, test) = _feature_data(args)
    labels = {"answer": lambda d: list(d.answer), "wrong": lambda d: list(d.wrong)}[args.labels]
    res = probe(model, train, site, labels, folds=args.folds, n_resamples=args.n_resamples, seed=args.seed)
    print(res)
    out = res.to_dict()
    if not args.no_causal:
        ev = res.causal_test(model, test, n_resamples=args.n_resamples)
        print(f"\nablating the probe subspace on {test.n} held-out prompts: {ev}")
        out["causal_test"] = ev.to_dict()
    _write_json(args.json, out)
    return 1 if args.strict and res.verdict != "supported" else 0


def _feature_parsers(sub) -> None:
    """`causalinterp das` and `causalinterp probe`: fit on one half of a task's prompts, test on the other."""
    for name, helptext, func in (
            ("das", "learn a subspace by distributed alignment search on half the prompts; test it on the other "
                    "half (IIA with CI, recovers, beats random subspaces)", cmd_das),
            ("probe", "cross-validated linear probe with a control task and selectivity on half the prompts; ablate "
                      "its direction on the other half", cmd_probe)):
        q = sub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("--model", required=True, help=MODEL_HELP)
        q.add_argument("--task", required=True, choices=["copy_choice", "induction", "ioi"],
                       help="the prompts (copy_choice: the induction testbed's two-token copy task)")
        q.add_argument("--site", required=True, metavar="COMPONENT:LAYER[:HEAD]:POSITION",
                       help="where, e.g. resid_post:1:end")
        q.add_argument("--n", type=int, default=120, help="prompts in all, split in two (default: 120)")
        q.add_argument("--split", type=float, default=0.5, help="share used for fitting (default: 0.5)")
        q.add_argument("--seed", type=int, default=0, help="seed of the data, fit and statistics (default: 0)")
        q.add_argument("--n-resamples", type=int, default=9999, help="bootstrap/permutation resamples")
        q.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
        q.add_argument("--strict", action="store_true", help="exit 1 unless the verdict is supported")
        if name == "das":
            q.add_argument("--dim", type=int, default=1, help="subspace dimension (default: 1)")
            q.add_argument("--steps", type=int, default=200, help="Adam steps (default: 200)")
            q.add_argument("--n-random", type=int, default=49, help="random subspaces to compare with (default: 49)")
        else:
            q.add_argument("--labels", default="answer", choices=["answer", "wrong"],
                           help="what to probe for: the answer token (default) or the wrong token")
            q.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
            q.add_argument("--no-causal", action="store_true", help="skip the held-out ablation of the direction")
        q.set_defaults(func=func)


def _lines(e: BaseException) -> list[str]:
    """The error as lines (one per problem: a file with several errors lists each)."""
    return [" ".join(line.split()) for line in str(e).splitlines() if line.strip()] or [type(e).__name__]


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _eprint("causalinterp: interrupted")
        return 130
    except (ValueError, OSError) as e:  # the library's input errors are ValueErrors that say what to fix
        if args.traceback:
            raise
        for line in _lines(e):
            _eprint(f"causalinterp: error: {line}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
