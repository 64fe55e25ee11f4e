"""The package's imports form a one-way graph: surfaces -> runner -> engine/evaluate -> models/stats/spec.

Parsed from the source with `ast` (every import, including ones inside functions, counts: a lazy
import is still a dependency).  Two checks: no module-level cycle, and no import that points up
the layers below.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "causalinterp"

# Lower index = lower layer; a module may import only from its own layer or lower ones.  Entries are
# areas (first level below the package) or, where one module of an area sits higher, that module.
LAYERS = [
    ["_version", "output", "spec", "stats", "verdict", "selection"],  # version; safe file writes; what is asked;
                                                                       # numbers; rules; which prompts chose sites
    ["models", "tasks"],                            # model access; contrast-set builders
    ["testbeds", "engine", "lens", "tracing", "evaluate", "circuits", "stability"],  # shipped models; effects;
                                                                        # verdicts; circuits, their faithfulness
    ["executors", "result", "spec.hypothesis", "spec.files", "tracking", "family", "features"],  # where units run; results;
                                                                         # hypotheses; family across hypotheses
                                                                         # (and their files); logging
    ["runner"],                                     # scan + evaluate for hypotheses
    ["report", "replicate", "scaffold", "examples", "session", "cli", "pytest_plugin", "__main__"],  # surfaces
]
# Being removed by the issues that own these areas; nothing may be added here.
KNOWN_CYCLES: list[list[str]] = []  # none left; keep it so
KNOWN_UPWARD = ["causalinterp.result -> causalinterp.report.html", "causalinterp.result -> causalinterp.report.markdown"]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Package modules `name` imports (``from x import y`` counts as x.y when that is a module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in MODULES and t != name}
    return out


def graph(skip_root: bool = True) -> dict[str, set[str]]:
    """Import edges between modules; the root `causalinterp/__init__` (a re-export facade) is left out."""
    g = {m: imports_of(m) for m in MODULES if not (skip_root and m == "causalinterp")}
    return {m: {t for t in deps if t != "causalinterp"} for m, deps in g.items()}


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def area(module: str) -> str:
    """The most specific LAYERS entry for a module (``spec.hypothesis`` before ``spec``)."""
    parts = module.split(".")[1:] or ["causalinterp"]
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYER_OF:
            return ".".join(parts[:k])
    return parts[0]


def test_the_graph_sees_imports():
    g = graph()
    assert "causalinterp.engine.compile" in g["causalinterp.engine.execute"]
    assert "causalinterp.spec.sites" in g["causalinterp.engine.compile"]


def test_no_import_cycles():
    cycles = [c for c in find_cycles(graph()) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles (move the shared code into a lower module):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_imports_only_point_down_the_layers():
    unknown = sorted({area(m) for m in MODULES if m != "causalinterp"} - set(LAYER_OF))
    assert not unknown, f"place these areas in LAYERS: {unknown}"
    upward = [f"{m} -> {t}" for m, deps in graph().items() for t in sorted(deps)
              if LAYER_OF[area(t)] > LAYER_OF[area(m)] and f"{m} -> {t}" not in KNOWN_UPWARD]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)
