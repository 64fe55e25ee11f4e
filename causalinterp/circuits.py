"""Circuits: nodes or edges of a model, how faithful they are (with CIs), and faithfulness curves (MIB CPR/CMD).

    circuit = ci.Circuit(nodes=ci.sites.heads([(0, 1), (1, 2)]))
    eff = ci.faithfulness(model, data, circuit, ablation="mean", n_random=100)
    ci.evaluate(eff, ci.claims.faithful(at_least=0.8))       # keeps >= 80% of the model's behaviour?
    ci.evaluate(eff, ci.claims.beats_random(100))            # better than random circuits of its size?
    curve = ci.faithfulness_curve(model, data, ranking)      # MIB sizes, per-point CIs, CPR and CMD with CIs

The *universe* is every node that can be in a circuit: by default every attention head (``head_out``) and
every MLP (``mlp_out``), each over all positions.  A circuit's model ablates every universe node outside the
circuit, jointly, with the chosen ablation ("mean" over the reference prompts, "resample" from another prompt,
"zero"); the empty circuit ablates all of them.  Per prompt the scan keeps three numbers -- the circuit's
metric m(C), the empty circuit's m(0) and the full model's m(M) -- and faithfulness is the ratio of means

    f(C) = (mean m(C) - mean m(0)) / (mean m(M) - mean m(0)),

so `faithfulness` returns `Effects` with ``values = m(C)``, ``base = m(0)``, ``target = m(M)``: `claims.faithful`
(a `recovers` claim on that ratio, bootstrap CI by cluster) and `claims.beats_random` (random circuits of the
same size, ``n_random``) read it like any scan.

An *edge circuit* (``Circuit(edges=...)``, single sender -> single receiver `ci.sites.Path`s) works the same
way over the universe of edges (`edge_universe`: embedding, heads and MLPs to every q/k/v, MLP input and the
logits downstream): every edge outside the circuit is ablated, i.e. its receiver reads the sender's ablated
value while the sender's other edges carry its actual one (`causalinterp.engine.edges`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from .engine.compile import make_plan, prepare, random_site_sets
from .engine.edges import EdgeRun, canonical_edges, edge_universe
from .engine.effects import Effects
from .engine.unit import run_unit
from .models.load import Model, load_model
from .spec.interventions import ablate
from .spec.paths import Path
from .spec.sites import ALL, Site, SiteSet

__all__ = ["Circuit", "CircuitError", "FaithfulnessCurve", "MIB_SIZES", "edge_universe", "faithfulness",
           "faithfulness_curve", "node_universe", "rank"]

# The circuit sizes of the MIB benchmark, as fractions of the universe (0.1% ... 100%).
MIB_SIZES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class CircuitError(ValueError):
    """A circuit or faithfulness request that cannot be evaluated as asked; the message says what to change."""


@dataclass(frozen=True)
class Circuit:
    """A circuit: `nodes` (Sites, e.g. heads and MLPs) or `edges` (single sender -> receiver `ci.sites.Path`s).

    `faithfulness` and `faithfulness_curve` evaluate a circuit of nodes or one of edges (not both at once:
    the nodes of an edge circuit are the ends of its edges).

    Examples:
        >>> import causalinterp as ci
        >>> c = ci.Circuit(nodes=ci.sites.heads([(0, 1), (1, 2)]))
        >>> c.size, c.nodes[0].label
        (2, 'head_out L0.H1 @all')
    """

    nodes: tuple = ()
    edges: tuple = ()

    def __post_init__(self):
        nodes = self.nodes.explicit if isinstance(self.nodes, SiteSet) else tuple(self.nodes)
        for i, s in enumerate(nodes):
            if not isinstance(s, Site):
                raise CircuitError(f"node {i} is {s!r}, not a ci.Site (build nodes with ci.sites.heads(...) or "
                                   "ci.Site('mlp_out', layer))")
        edges = tuple(self.edges)
        for i, e in enumerate(edges):
            if not isinstance(e, Path):
                raise CircuitError(f"edge {i} is {e!r}, not a ci.sites.Path (sender -> receiver)")
        if len(set(nodes)) != len(nodes):
            raise CircuitError("the circuit lists a node twice")
        if len(set(edges)) != len(edges):
            raise CircuitError("the circuit lists an edge twice")
        object.__setattr__(self, "nodes", tuple(nodes))
        object.__setattr__(self, "edges", edges)

    @property
    def size(self) -> int:
        return len(self.nodes) + len(self.edges)

    @property
    def members(self) -> frozenset:
        """Node and edge labels (for Jaccard similarity and selection frequencies)."""
        return frozenset([s.label for s in self.nodes] + [e.label for e in self.edges])

    def jaccard(self, other: "Circuit") -> float:
        """|A and B| / |A or B| of the two circuits' members (1 for two empty circuits)."""
        a, b = self.members, other.members
        return 1.0 if not a and not b else len(a & b) / len(a | b)

    def to_dict(self) -> dict:
        return {"nodes": [s.to_dict() for s in self.nodes], "edges": [e.to_dict() for e in self.edges]}


def node_universe(model: Model, positions=ALL) -> tuple[Site, ...]:
    """Every attention head (head_out) and every MLP (mlp_out) of `model`, at `positions` ("all" by default).

    Examples:
        >>> import causalinterp as ci
        >>> len(ci.circuits.node_universe(ci.load_model("testbed:induction")))   # 2 layers x (4 heads + MLP)
        10
    """
    out = []
    for layer in range(model.n_layers):
        out += [Site("head_out", layer, h, positions) for h in range(model.n_heads)]
        try:
            model.location("mlp_out", layer)
            out.append(Site("mlp_out", layer, None, positions))
        except ValueError:
            pass
    return tuple(out)


def _universe(model: Model, data, universe, edges: bool = False) -> tuple:
    """The nodes (or, for edge circuits, the canonical edges) a circuit may contain."""
    if universe is None:
        return edge_universe(model) if edges else node_universe(model)
    if edges:
        items = universe.resolve(model.n_layers, model.n_heads, data.lengths, data.positions.keys()) \
            if hasattr(universe, "resolve") else tuple(universe)
        if not all(isinstance(e, Path) for e in items):
            raise CircuitError("an edge circuit's universe= is a list of edges (ci.sites.Path); leave it out for "
                               "every edge of the model (ci.circuits.edge_universe)")
        return canonical_edges(model, items)
    if isinstance(universe, SiteSet):
        return universe.resolve(model.n_layers, model.n_heads, data.lengths, data.positions.keys())
    return tuple(universe)


def _members(model: Model, circuit: Circuit) -> tuple[tuple, bool]:
    """(the circuit's members, True for an edge circuit): its nodes, or its edges in canonical form."""
    if circuit.edges and circuit.nodes:
        raise CircuitError("faithfulness evaluates a circuit of nodes or a circuit of edges, not both; give "
                           "Circuit(edges=...) alone (its nodes are the ends of its edges) or Circuit(nodes=...)")
    if circuit.edges:
        return canonical_edges(model, circuit.edges), True
    return circuit.nodes, False


def _complement(universe: Sequence, members) -> tuple[int, ...]:
    inside = set(members)
    return tuple(j for j, s in enumerate(universe) if s not in inside)


def _check_members(universe, members, edges: bool) -> None:
    missing = [s.label for s in members if s not in set(universe)]
    if missing:
        what = ("edges", "the universe of edges (default: ci.circuits.edge_universe(model))") if edges else \
            ("nodes", "the universe of nodes (default: every head_out and mlp_out at position 'all')")
        raise CircuitError(f"circuit {what[0]} {missing[:5]} are not in {what[1]}; pass universe= with them, or "
                           "use those sites")


def _ablated(model, data, uni, columns, intervention, metric, edges: bool, *, batch_size, memory_budget, cache,
             progress=False):
    """Per-prompt metric with each column's universe members ablated ([n, n_columns], with the clean metric for
    an empty column), the clean metric [n], and the run's context.  Each distinct column is computed once."""
    todo = [c for c in dict.fromkeys(tuple(sorted(c)) for c in columns) if c]
    if not todo:
        raise CircuitError("the universe is empty: nothing could be ablated")
    if edges:
        ctx = EdgeRun(model, data, uni, intervention, metric, batch_size=batch_size, memory_budget=memory_budget,
                      cache=cache)
        table = ctx.metrics(todo, progress=progress)
    else:
        table, ctx = ablated_metrics(model, data, uni, todo, intervention, metric, batch_size=batch_size,
                                     memory_budget=memory_budget, cache=cache)
    where = {c: j for j, c in enumerate(todo)}
    full = ctx.clean_metric
    return np.column_stack([table[:, where[tuple(sorted(c))]] if c else full for c in columns]), full, ctx


def ablated_metrics(model: Model, data, universe, columns, intervention, metric=None, *, batch_size=None,
                    memory_budget="2GB", cache=None):
    """Per-prompt metric with each column's universe nodes ablated jointly: ([n, n_columns], context).

    Columns are non-empty tuples of indices into `universe`.  One plan for all of them: many columns per
    forward pass, each a `run_unit` like any scan.
    """
    the_plan = make_plan(model, data, tuple(universe), intervention=intervention, metric=metric,
                         columns=columns, batch_size=batch_size, memory_budget=memory_budget)
    ctx = prepare(model, data, the_plan, cache)
    flat = np.concatenate([run_unit(model, ctx, u) for u in the_plan.units])
    return flat.reshape(len(columns), data.n).T, ctx


def faithfulness(model, data, circuit: Circuit, ablation: str = "mean", *, universe=None, n_random: int = 0,
                 seed: int = 0, reference: str = "corrupt", metric=None, batch_size=None, memory_budget="2GB",
                 cache: dict | None = None, progress: bool = False) -> Effects:
    """The circuit's model (every universe node or edge outside it ablated) per prompt, framed for claims.

    Returns `Effects` with one joint column: ``values`` = m(C), ``base`` = m(0) (all universe nodes
    ablated), ``target`` = m(M) (nothing ablated, the clean run), ``random_values`` = m of `n_random`
    random circuits of the same size (seeded, distinct).  ``meta["faithfulness"]`` is the point estimate;
    ``ci.evaluate(eff, ci.claims.faithful(at_least=...))`` gives it with a (cluster) bootstrap CI.  An edge
    circuit (``Circuit(edges=...)``) is evaluated over `edge_universe` (or `universe=` edges); `progress`
    shows a bar for its (circuit, prompt) rows.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32)
        >>> circuit = ci.Circuit(nodes=ci.sites.heads([(0, 1), (1, 2)]))
        >>> eff = ci.faithfulness(model, data, circuit, universe=ci.sites.head_out(positions="all"))
        >>> round(eff.meta["faithfulness"], 2)                  # heads outside it mean-ablated, MLPs kept
        1.0
    """
    if not isinstance(model, Model):
        model = load_model(model)
    if not isinstance(circuit, Circuit):
        raise CircuitError(f"circuit must be a ci.Circuit, got {type(circuit).__name__}")
    intervention = ablate(ablation, seed=seed, reference=reference)
    members, edges = _members(model, circuit)
    uni = _universe(model, data, universe, edges)
    _check_members(uni, members, edges)
    everything = tuple(range(len(uni)))
    columns = [_complement(uni, members), everything]
    random_sets = []
    if n_random:
        random_sets = random_site_sets(len(uni), len(members), int(n_random), seed)
        columns += [_complement(uni, [uni[j] for j in picks]) for picks in random_sets]
    vals, full, ctx = _ablated(model, data, uni, columns, intervention, metric, edges, batch_size=batch_size,
                               memory_budget=memory_budget, cache=cache, progress=progress)
    m_c, m_0 = vals[:, 0], vals[:, 1]
    gap = full.mean() - m_0.mean()
    f = float((m_c.mean() - m_0.mean()) / gap) if gap != 0 else float("nan")
    meta = {"faithfulness": f, "ablation": ablation, "universe_size": len(uni), "circuit_size": len(members),
            "level": "edges" if edges else "nodes", "circuit": circuit.to_dict()}
    if n_random:
        meta["random_sets"] = {"distinct": None, "drawn": len(random_sets),
                               "exhaustive": len(random_sets) < n_random}
    return Effects(values=m_c[:, None].copy(), clean=ctx.clean_metric, corrupt=ctx.corrupt_metric,
                   sites=tuple(members), base=m_0.copy(), target=full.copy(), joint=True, intervention=intervention,
                   metric=ctx.metric, clusters=None if data.clusters is None else np.asarray(data.clusters),
                   random_values=vals[:, 2:].copy() if n_random else None, meta=meta)


# --- faithfulness curves ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FaithfulnessCurve:
    """Faithfulness of the top-k circuits of a ranking at several sizes, with joint bootstrap CIs.

    fractions [K]   circuit sizes as fractions of the universe; k [K] the node counts
    estimate, ci_low, ci_high [K]   f(C_k) and its percentile CI (cluster bootstrap over prompts, the same
                    resamples for every size, so the curve's points and the areas are jointly resampled)
    cpr, cmd        (estimate, low, high): the area under f (CPR, higher is better) and the area between f
                    and 1 (CMD, lower is better), trapezoid rule over the fraction axis as in MIB
    values [n, K]   m(C_k) per prompt; empty, full [n]: m(0) and m(M) per prompt
    """

    fractions: np.ndarray
    k: np.ndarray
    estimate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    cpr: tuple
    cmd: tuple
    values: np.ndarray
    empty: np.ndarray
    full: np.ndarray
    confidence_level: float
    n_resamples: int
    ranking: tuple = ()
    meta: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"fraction": self.fractions, "k": self.k, "faithfulness": self.estimate,
                             "ci_low": self.ci_low, "ci_high": self.ci_high})

    def to_dict(self) -> dict:
        return {"fractions": self.fractions.tolist(), "k": self.k.tolist(), "estimate": self.estimate.tolist(),
                "ci_low": self.ci_low.tolist(), "ci_high": self.ci_high.tolist(), "cpr": list(self.cpr),
                "cmd": list(self.cmd), "confidence_level": self.confidence_level, "n_resamples": self.n_resamples,
                "ranking": [s.label for s in self.ranking], "meta": self.meta}

    def __str__(self) -> str:
        rows = [f"  {100 * fr:g}% (k={k}): {e:.3f} [{lo:.3f}, {hi:.3f}]"
                for fr, k, e, lo, hi in zip(self.fractions, self.k, self.estimate, self.ci_low, self.ci_high)]
        return (f"faithfulness curve ({100 * self.confidence_level:g}% CIs)\n" + "\n".join(rows)
                + f"\n  CPR {self.cpr[0]:.3f} [{self.cpr[1]:.3f}, {self.cpr[2]:.3f}]"
                + f"\n  CMD {self.cmd[0]:.3f} [{self.cmd[1]:.3f}, {self.cmd[2]:.3f}]")


def _areas(fr: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CPR and CMD of curves f [..., K] over fractions fr [K] (trapezoid rule)."""
    return np.trapezoid(f, fr, axis=-1), np.trapezoid(np.abs(1.0 - f), fr, axis=-1)


def rank(effects: Effects, absolute: bool = True) -> tuple:
    """The sites (nodes or edges) of a scan, largest mean effect |mean m(site) - mean m(base)| first (the signed
    effect with ``absolute=False``; ties keep the scan's order): a ranking for `faithfulness_curve`.  Rank on
    one half of the prompts, draw the curve on the other.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32)
        >>> eff = ci.scan(model, data, ci.sites.heads([(0, 0), (1, 2)]), intervention=ci.ablate("mean"),
        ...               progress=False)
        >>> [s.label for s in ci.circuits.rank(eff)]
        ['head_out L1.H2 @all', 'head_out L0.H0 @all']
    """
    if effects.joint:
        raise CircuitError("rank orders the sites of a sweep (one column per site), not a joint scan")
    effect = effects.values.mean(0) - effects.base.mean()
    size = np.abs(effect) if absolute else effect
    return tuple(effects.sites[i] for i in np.argsort(-size, kind="stable"))


def curve_from_values(values, empty, full, fractions, k, *, clusters=None, n_resamples: int = 2000,
                      confidence_level: float = 0.95, seed: int = 0, ranking=(), meta=None) -> FaithfulnessCurve:
    """The curve's statistics from per-prompt metrics: values [n, K] = m(C_k), empty/full [n].

    One cluster bootstrap of the prompt means of every column at once (`stats.bootstrap_distribution`), so
    each resample gives a whole curve and its two areas; percentile intervals of each.
    """
    from .stats.bootstrap import bootstrap_distribution
    values, empty, full = np.asarray(values, float), np.asarray(empty, float), np.asarray(full, float)
    fr = np.asarray(fractions, float)
    x = np.column_stack([values, empty, full])
    means = x.mean(0)

    def ratio(m):
        gap = m[..., -1] - m[..., -2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (m[..., :-2] - m[..., -2:-1]) / gap[..., None]

    est = ratio(means)
    dist = bootstrap_distribution(x, n_resamples=n_resamples, seed=seed, clusters=clusters)
    curves = ratio(dist)
    a = (1 - confidence_level) / 2
    lo, hi = np.nanquantile(curves, [a, 1 - a], axis=0)
    cpr_b, cmd_b = _areas(fr, curves)
    cpr, cmd = _areas(fr, est)
    q = lambda d: tuple(float(v) for v in np.nanquantile(d, [a, 1 - a]))  # noqa: E731
    return FaithfulnessCurve(fractions=fr, k=np.asarray(k), estimate=est, ci_low=lo, ci_high=hi,
                             cpr=(float(cpr), *q(cpr_b)), cmd=(float(cmd), *q(cmd_b)), values=values, empty=empty,
                             full=full, confidence_level=confidence_level, n_resamples=n_resamples,
                             ranking=tuple(ranking), meta=dict(meta or {}))


def faithfulness_curve(model, data, ranking, ablation: str = "mean", *, sizes=MIB_SIZES, universe=None,
                       n_resamples: int = 2000, confidence_level: float = 0.95, seed: int = 0,
                       reference: str = "corrupt", metric=None, batch_size=None, memory_budget="2GB",
                       cache: dict | None = None, progress: bool = False) -> FaithfulnessCurve:
    """Faithfulness of the top-k nodes or edges of `ranking` (most important first) at each size (fractions of
    the universe; `rank` orders a scan's sites).

    k = round(fraction x universe size), at least 0; the empty circuit has f = 0 by definition and the
    whole universe f = 1.  Every size's circuit is one column of one run (many per forward pass).  A ranking of
    edges (`ci.sites.Path`) draws the curve over the universe of edges (`edge_universe` by default).

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32)
        >>> ranking = ci.sites.heads([(1, 2), (0, 1)]).explicit
        >>> curve = ci.faithfulness_curve(model, data, ranking, sizes=(0.1, 0.2, 1.0), n_resamples=200)
        >>> curve.k.tolist(), round(float(curve.estimate[-1]), 6)
        ([1, 2, 10], 1.0)
    """
    if not isinstance(model, Model):
        model = load_model(model)
    intervention = ablate(ablation, seed=seed, reference=reference)
    ranking = tuple(ranking.explicit if isinstance(ranking, SiteSet) else ranking)
    edges = bool(ranking) and all(isinstance(x, Path) for x in ranking)
    if edges:
        ranking = canonical_edges(model, ranking)
    elif any(isinstance(x, Path) for x in ranking):
        raise CircuitError("the ranking mixes nodes and edges; rank nodes (Sites) or edges (ci.sites.Path)")
    uni = _universe(model, data, universe, edges)
    what = "edges" if edges else "nodes"
    missing = [s.label for s in ranking if s not in set(uni)]
    if missing:
        raise CircuitError(f"ranked {what} {missing[:5]} are not in the universe; pass universe= with them")
    if len(set(ranking)) != len(ranking):
        raise CircuitError(f"the ranking lists one of its {what} twice")
    # nodes the ranking leaves out come last, in universe order (they join only at 100%)
    order = list(ranking) + [s for s in uni if s not in set(ranking)]
    fr = np.asarray(sorted(float(f) for f in sizes))
    if fr.size == 0 or fr[0] <= 0 or fr[-1] > 1:
        raise CircuitError(f"sizes must be fractions in (0, 1], got {list(sizes)}")
    ks = np.array([min(len(uni), int(math.floor(f * len(uni) + 0.5))) for f in fr])
    everything = tuple(range(len(uni)))
    columns = [_complement(uni, order[:k]) for k in ks] + [everything]
    vals, full, _ = _ablated(model, data, uni, columns, intervention, metric, edges, batch_size=batch_size,
                             memory_budget=memory_budget, cache=cache, progress=progress)
    clusters = None if data.clusters is None else np.asarray(data.clusters)
    return curve_from_values(vals[:, :-1], vals[:, -1], full, fr, ks, clusters=clusters, n_resamples=n_resamples,
                             confidence_level=confidence_level, seed=seed, ranking=order,
                             meta={"ablation": ablation, "universe_size": len(uni), "level": what})
