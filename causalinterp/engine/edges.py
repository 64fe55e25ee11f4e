"""Edge ablation: the metric of the clean run with chosen sender -> receiver edges ablated, many circuits at once.

An *edge* is a single-sender, single-receiver `ci.sites.Path`: senders are the embedding (``resid_pre`` of
layer 0), heads (``head_out``; ``attn_out`` where a head's share is undefined) and MLPs (``mlp_out``);
receivers are a head's query, key or value input (``q``/``k``/``v``; per key/value group under GQA), an MLP's
input (``mlp_out``) and ``"logits"``.  In the edge-ablated run every receiver v reads

    x_v = clean stream at v + sum over senders u upstream of v of (c_u - clean_u),
    c_u = u's actual output in this run if the edge u -> v is kept, u's ablated output if it is removed,

(each term is the sender's contribution to the residual stream), and computes normally from it.  So a
removed edge feeds v the sender's ablated value while every other route of u still carries its actual
value, and the actual values themselves come from edge-ablated inputs (as in ACDC, EAP and MIB).

Equivalently x_v is the sum of what v receives: the kept senders' actual contributions, the removed
senders' ablated ones, and the attention output biases; it is computed that way (not as the clean stream
plus differences, whose float32 residue a norm would blow up where the true stream is near zero).

How it runs, per batch of (circuit, prompt) rows and per layer: a *compute pass* writes, for each group of
receivers with the same removed senders, the stream they read and reads their q/k/v (and parallel MLPs);
an *attention pass* writes every head's recomputed q/k/v and reads the heads' outputs; in sequential
blocks an *MLP pass* writes the MLP's input stream and reads its output.  Layers whose receivers all read
the same stream share one pass for the attention.  The logits are the final norm and unembedding of the
last stream.  Removing every edge out of a node equals ablating the node; removing one edge equals path
patching that edge (tests/test_edges.py); a hand-written reference checks the rest.
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.adapters import head_index
from ..models.load import Model
from ..spec.data import ContrastSet
from ..spec.paths import LOGITS, Path
from ..spec.sites import ALL, Site, SiteError
from . import plan as P
from .compile import (ScanError, _cached_plain, _can_skip, _check_inputs, _resample_sources, baseline_metrics, check_finite,
                      model_shape, read_positions)
from .paths import (_check_head_sender, _check_logit_readout, _compute_pass, _new_values, _sequential,
                    enters, reads)
from .unit import embedding_module, keep_index

__all__ = ["EMBED", "EdgeRun", "edge_universe", "edge_ablated_metrics", "canonical_edges"]

EMBED = Site("resid_pre", 0, None, ALL)
SENDERS = ("resid_pre", "head_out", "attn_out", "mlp_out")
RECEIVERS = ("q", "k", "v", "mlp_out")


def _heads_have_shares(model: Model, layer: int) -> bool:
    try:
        _check_head_sender(model, Site("head_out", layer, 0, ALL))
        return True
    except SiteError:
        return False


def _receivers(model: Model, layer: int) -> list:
    """The receivers of a layer in execution order: q of every head, k and v of every key/value group, the MLP."""
    group = model.n_heads // model.n_kv_heads
    out = [Site("q", layer, h, ALL) for h in range(model.n_heads)]
    out += [Site(c, layer, g * group, ALL) for c in "kv" for g in range(model.n_kv_heads)]
    return out + [Site("mlp_out", layer, None, ALL)]


def _senders(model: Model, layer: int) -> list:
    if _heads_have_shares(model, layer):
        heads = [Site("head_out", layer, h, ALL) for h in range(model.n_heads)]
    else:
        heads = [Site("attn_out", layer, None, ALL)]
    return heads + [Site("mlp_out", layer, None, ALL)]


def edge_universe(model: Model, embed: bool = True) -> tuple[Path, ...]:
    """Every edge of `model`: each sender (embedding, heads, MLPs) to each receiver downstream of it.

    Ordered by receiver (execution order), then sender.  Heads are senders through their share of the
    attention output; families with a norm after attention (no per-head share) use ``attn_out`` instead.

    Examples:
        >>> import causalinterp as ci
        >>> edges = ci.circuits.edge_universe(ci.load_model("testbed:induction"))
        >>> len(edges), edges[0].label
        (110, 'path(resid_pre L0 @all -> q L0.H0 @all)')
    """
    senders = ([EMBED] if embed else []) + [s for layer in range(model.n_layers) for s in _senders(model, layer)]
    receivers = [r for layer in range(model.n_layers) for r in _receivers(model, layer)] + [LOGITS]
    out = []
    for r in receivers:
        state = reads(model, r)[0]
        out += [Path((s,), (r,)) for s in senders if enters(model, s) <= state]
    return tuple(out)


def canonical_edges(model: Model, edges) -> tuple[Path, ...]:
    """`edges` checked as single sender -> single receiver edges at every position; a key/value receiver of a
    query head becomes its key/value group's first head (all heads of a group read the same keys/values)."""
    group = model.n_heads // model.n_kv_heads
    out = []
    for e in edges:
        if not isinstance(e, Path):
            raise SiteError(f"edge {e!r} is not a ci.sites.Path (build edges with ci.sites.path(senders, receivers))")
        if len(e.senders) != 1 or len(e.receivers) != 1:
            raise SiteError(f"edge {e.label} has {len(e.senders)} senders and {len(e.receivers)} receivers; an edge "
                            "has one of each (ci.sites.path(senders, receivers) gives one edge per pair)")
        (s,), (r,) = e.senders, e.receivers
        if s.component not in SENDERS or (s.component == "resid_pre" and s.layer != 0) or s.position != ALL:
            raise SiteError(f"edge {e.label}: an edge's sender is the embedding (resid_pre L0), a head (head_out), "
                            "attn_out or mlp_out, at every position (position='all')")
        if s.component == "head_out" and not _heads_have_shares(model, s.layer):
            _check_head_sender(model, s)      # raises with the reason
        if s.component == "attn_out" and _heads_have_shares(model, s.layer):
            raise SiteError(f"edge {e.label}: in this model attention's output splits into heads; use head_out "
                            "senders (an attn_out sender would count the heads twice)")
        if r != LOGITS:
            if r.component not in RECEIVERS or r.position != ALL:
                raise SiteError(f"edge {e.label}: an edge's receiver is a head's q, k or v, an MLP (mlp_out, its "
                                "input) or 'logits', at every position (position='all')")
            if r.component in "kv":
                r = Site(r.component, r.layer, head_index(r.component, r.head, model.n_heads, model.n_kv_heads)
                         * group, ALL)
            model.location(r.component, r.layer)
        model.location(s.component, s.layer)
        if enters(model, s) > reads(model, r)[0]:
            raise SiteError(f"edge {e.label}: the sender writes to the residual stream after the receiver reads it, "
                            "so there is no such edge")
        out.append(Path((s,), (r,)))
    if len(set(out)) != len(out):
        raise SiteError("the edges list the same edge twice (key/value receivers of one GQA group are one edge)")
    return tuple(out)


class EdgeRun:
    """Per-prompt metric of edge-ablated runs: ``metrics(columns)`` -> [n_prompts, n_columns].

    Built once per (model, data, edges, ablation): caches the clean run, the ablated contribution of every
    sender and the unpatched metrics; each column is a set of indices into `edges` that are removed.

    Every stream a receiver reads is formed as the sum of the contributions it receives (the kept senders'
    actual ones, the removed senders' ablated ones, attention output biases), never as the clean stream plus
    differences: a stream that should be (near) zero -- zero ablation of everything upstream -- then is, where
    a difference of large terms would leave float32 residue that a norm blows up.
    """

    def __init__(self, model, data: ContrastSet, edges, intervention, metric=None, *, batch_size=None,
                 memory_budget="2GB", cache: dict | None = None):
        model, intervention, metric = _check_inputs(model, data, intervention, metric, 0)
        if intervention.base_run != "clean":
            raise ScanError("edge ablation ablates the clean run: use ci.ablate('mean' | 'zero' | 'resample') or "
                            "ci.patch('noise') (corrupt activations), not a denoising patch")
        if model.remote:
            raise ScanError("edge ablation runs locally only (it writes per-receiver streams); load the model locally")
        self.model, self.data, self.intervention, self.metric = model, data, intervention, metric
        self.edges = canonical_edges(model, edges)
        L = model.n_layers
        self.sequential = [_sequential(model, layer) for layer in range(L)]
        self.heads_split = [_heads_have_shares(model, layer) for layer in range(L)]
        # every node that writes to the stream, in execution order; edges' senders are among them
        self.nodes = [EMBED] + [s for layer in range(L) for s in _senders(model, layer)]
        self.node_index = {s: j for j, s in enumerate(self.nodes)}
        self.enters = [enters(model, s) for s in self.nodes]
        missing = [e.label for e in self.edges if e.senders[0] not in self.node_index]
        if missing:
            raise SiteError(f"edges {missing[:3]}: their senders are not nodes of this model's edge graph")
        self.senders = list(dict.fromkeys(e.senders[0] for e in self.edges))
        self.edge_parts = [(self.node_index[e.senders[0]], e.receivers[0]) for e in self.edges]
        n, T = data.n, max(data.lengths)
        self.read_pos = read_positions(data, metric)

        keys = {("resid_pre", 0)} | {("attn_out", layer) for layer in range(L)}
        keys |= {("mlp_out", layer) for layer in range(L)}
        keys |= {("head_out", layer) for layer in range(L) if self.heads_split[layer]}
        self.skip = _can_skip(model)
        keys |= {("resid_post", layer) for layer in range(L)} if self.skip else set()
        shape = model_shape(model)
        self.per_row = P.bytes_per_row(shape, T, len(torch.unique(self.read_pos)))
        fixed = P.cache_bytes(shape, n, T, len(keys) + len(self.senders))
        self.budget, self.fixed = P.parse_bytes(memory_budget), fixed
        base_rows = P.rows_per_pass(n, self.per_row, fixed, self.budget, batch_size, model.device.type == "cpu")
        self.batch_size = batch_size
        # rows of one forward pass (expanded rows are cut into passes of this size)
        self.rows = P.rows_per_pass(10**9, self.per_row, fixed, self.budget, batch_size, model.device.type == "cpu")
        kind = intervention.kind
        src_run = "corrupt" if kind == "noise" else intervention.reference
        self.clean, clean_logits = _cached_plain(cache, model, data.tokens("clean"), self.read_pos, sorted(keys),
                                                 base_rows)
        sender_keys = sorted({(s.component, s.layer) for s in self.senders})
        # the corrupt run carries its embedding noise where the data has one (causal tracing)
        noise = data.corruption.draw(model, data) if getattr(data, "corruption", None) is not None else None
        noisy = (noise, embedding_module(model)) if noise is not None else (None, None)
        source, corrupt_logits = _cached_plain(cache, model, data.tokens("corrupt"), self.read_pos,
                                               sender_keys if src_run == "corrupt" else [], base_rows, *noisy)
        if src_run == "clean":
            source = self.clean
        self.answer, self.wrong, self.clean_metric, self.corrupt_metric = baseline_metrics(
            metric, data, clean_logits, corrupt_logits)
        self.clean_logits = clean_logits
        _check_logit_readout(model, [Path((EMBED,), (LOGITS,))], self.clean, self.read_pos, clean_logits)

        self.multiplier = float(getattr(model.config, "residual_multiplier", 1.0) or 1.0)
        # what attention adds besides its heads (the output projection's bias, residual multiplier applied), per
        # layer with head nodes; `bias_enters`: the stream state from which it is in the stream
        self.bias = {layer: self._o_proj(layer, torch.zeros(1, 1, model.n_heads * model.d_head))[0, 0]
                     * self.multiplier for layer in range(L) if self.heads_split[layer]}
        self.bias_enters = {layer: enters(model, Site("head_out", layer, 0, ALL)) for layer in self.bias}
        # each sender's ablated contribution to the stream, stacked: [n, senders, T * d]; `ablated_column`:
        # node index -> its column
        resample_from = (_resample_sources(n, len(self.senders), intervention.seed, data.lengths)
                         if kind == "resample" else None)
        lengths = torch.tensor(data.lengths)
        self.ablated_column = {self.node_index[s]: j for j, s in enumerate(self.senders)}
        self.ablated_stack = torch.stack(
            [self._contribution(s, _new_values(kind, s, j, None, self.clean[(s.component, s.layer)], source, data,
                                               resample_from, lengths)).reshape(n, -1)
             for j, s in enumerate(self.senders)], 1)
        self.tokens = data.tokens("clean")

    # --- contributions to the stream ----------------------------------------------------------------
    def _o_proj(self, layer: int, flat: torch.Tensor) -> torch.Tensor:
        o_proj = self.model.hf.get_submodule(self.model.location("head_out", layer).module)
        with torch.no_grad():
            return o_proj(flat.to(self.model.device)).float().cpu()

    def _head_contributions(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """[H, rows, T, d]: each head's share W_O,h z_h of the attention output (bias excluded), from per-head
        outputs z [rows, T, H, d_head]: the projection of z with every other head zeroed, minus the bias."""
        rows, T, H, dh = z.shape
        one = torch.zeros(H, rows, T, H, dh, dtype=z.dtype)
        for h in range(H):
            one[h, :, :, h] = z[:, :, h]
        out = self._o_proj(layer, one.reshape(H * rows, T, H * dh)).reshape(H, rows, T, -1)
        return out * self.multiplier - self.bias[layer]

    def _contribution(self, s: Site, acts: torch.Tensor) -> torch.Tensor:
        """What node `s` adds to the residual stream given its activation (canonical view; a head: [.., H, dh])."""
        if s.component == "head_out":
            return self._head_contributions(s.layer, acts)[s.head]
        if s.component == "resid_pre":
            return acts.float()
        return acts.float() * self.multiplier

    # --- one batch of rows ---------------------------------------------------------------------------
    def _removed(self, columns) -> list[dict]:
        """Per column: receiver -> frozenset of removed sender (node) indices."""
        out = []
        for col in columns:
            d: dict = {}
            for i in col:
                j, r = self.edge_parts[i]
                d.setdefault(r, set()).add(j)
            out.append({r: frozenset(v) for r, v in d.items()})
        return out

    def _stream(self, state: int, prompts, rows_e, sets_e, actual: dict) -> torch.Tensor:
        """Streams of expanded rows (a row and the set of nodes removed for its receivers; `rows_e` ascending) at `state`:
        the sum over upstream nodes of their actual contribution, or the ablated one where removed, plus the
        attention biases.  [E, T, d]"""
        up = [j for j in range(len(self.nodes)) if self.enters[j] <= state]
        m = len(prompts)
        shape = actual[0].shape[1:]
        A = torch.stack([actual[j] for j in up], 1).reshape(m, len(up), -1)        # [m, N, T*d]
        pos = {j: i for i, j in enumerate(up)}
        masks: dict = {}                  # each distinct removed set once (all prompts of a circuit share it)
        for g in sets_e:
            if g not in masks:
                row = torch.zeros(len(up))
                row[[pos[j] for j in g]] = 1.0
                masks[g] = row
        removed = torch.stack([masks[g] for g in sets_e]) if sets_e else torch.zeros(0, len(up))
        kept = 1.0 - removed
        x = torch.empty(len(rows_e), A.shape[-1])
        senders = [i for i, j in enumerate(up) if j in self.ablated_column]
        stacked = self.ablated_stack[:, [self.ablated_column[up[i]] for i in senders]]
        bounds = np.searchsorted(rows_e, np.arange(m + 1))      # expanded rows come grouped by row, in order
        for k in range(m):
            a, b = int(bounds[k]), int(bounds[k + 1])
            if a == b:
                continue
            x[a:b] = kept[a:b] @ A[k]
            r = removed[a:b, senders]
            if r.any():
                x[a:b] += r @ stacked[prompts[k]]
        x = x.reshape(len(rows_e), *shape)
        for layer, b in self.bias.items():
            if self.bias_enters[layer] <= state:
                x = x + b
        return x

    def _passes(self, tokens, keep, writes: dict, reads_: dict, prompts: np.ndarray, layer: int) -> dict:
        """`_compute_pass` over rows in sub-batches of at most `self.rows` (expanded rows can be many), skipping
        the blocks below `layer` (their output is overwritten) and stopping after the last read."""
        n = tokens.shape[0]
        parts = []
        for a, b in P.chunks(n, self.rows):
            pt = torch.as_tensor(prompts[a:b])
            skip = [self.clean[("resid_post", l)][pt] for l in range(layer)] if self.skip else ()
            parts.append(_compute_pass(self.model, tokens[a:b], keep, {k: v[a:b] for k, v in writes.items()},
                                       reads_, skip=skip, stop=True))
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _rows(self, cols: np.ndarray, prompts: np.ndarray, removed: list[dict]) -> np.ndarray:
        """Metric values of (column, prompt) rows."""
        model, L, H = self.model, self.model.n_layers, self.model.n_heads
        m = len(cols)
        pt = torch.as_tensor(prompts)
        toks = self.tokens[pt]
        keep = keep_index(self.read_pos[pt])[0]
        actual = {0: self.clean[("resid_pre", 0)][pt].float()}   # node index -> [m, T, d] actual contribution
        empty = frozenset()
        col_sets = [removed[c] for c in cols]

        def expand(receivers):
            """Expanded rows for `receivers`: (row index, removed set) per distinct pair, and for each row and
            receiver the expanded row it reads."""
            where: dict = {}
            index = np.empty((m, len(receivers)), dtype=int)
            for k in range(m):
                for i, r in enumerate(receivers):
                    index[k, i] = where.setdefault((k, col_sets[k].get(r, empty)), len(where))
            return np.array([k for k, _ in where]), [g for _, g in where], index

        for layer in range(L):
            recv = _receivers(model, layer)
            attn_recv = [r for r in recv if r.component in "qkv"]
            parallel_mlp = not self.sequential[layer]
            pre_recv = attn_recv + ([recv[-1]] if parallel_mlp else [])
            key = ("resid_pre", layer)
            rows_e, sets_e, index = expand(pre_recv)
            x = self._stream(2 * layer, prompts, rows_e, sets_e, actual)
            reads_ = {("head_out" if self.heads_split[layer] else "attn_out", layer): [None]}
            if len(rows_e) == m:   # every receiver of a row reads the same stream: one pass for attention (and MLP)
                if parallel_mlp:
                    reads_[("mlp_out", layer)] = [None]
                out = self._passes(toks, keep, {key: x}, reads_, prompts, layer)
            else:
                qkv_reads = {(c, layer): [None] for c in "qkv"}
                if parallel_mlp:
                    qkv_reads[("mlp_out", layer)] = [None]
                got = self._passes(toks[torch.as_tensor(rows_e)], keep, {key: x}, qkv_reads, prompts[rows_e], layer)
                writes = {}
                for c in "qkv":
                    full = got[(c, layer, None)]
                    new = full[torch.as_tensor(index[:, 0])].clone()
                    for i, r in enumerate(attn_recv):
                        if r.component == c:
                            h = head_index(c, r.head, H, model.n_kv_heads)
                            new[:, :, h] = full[torch.as_tensor(index[:, i]), :, h]
                    writes[(c, layer)] = new
                out = self._passes(toks, keep, writes, reads_, prompts, layer)
                if parallel_mlp:
                    out[("mlp_out", layer, None)] = got[("mlp_out", layer, None)][torch.as_tensor(index[:, -1])]
            if self.heads_split[layer]:
                shares = self._head_contributions(layer, out[("head_out", layer, None)])
                for h in range(H):
                    actual[self.node_index[Site("head_out", layer, h, ALL)]] = shares[h]
            else:
                actual[self.node_index[Site("attn_out", layer, None, ALL)]] = \
                    out[("attn_out", layer, None)].float() * self.multiplier
            mlp = recv[-1]
            if not parallel_mlp:
                rows_e, sets_e, _ = expand([mlp])
                x = self._stream(reads(model, mlp)[0], prompts, rows_e, sets_e, actual)
                out = self._passes(toks, keep, {("resid_mid", layer): x}, {("mlp_out", layer): [None]}, prompts, layer)
            actual[self.node_index[Site("mlp_out", layer, None, ALL)]] = \
                out[("mlp_out", layer, None)].float() * self.multiplier

        from ..lens import final_logits
        rows_e, sets_e, _ = expand([LOGITS])
        x = self._stream(reads(model, LOGITS)[0], prompts, rows_e, sets_e, actual)
        rp = self.read_pos[pt]
        picked = final_logits(model, x[torch.arange(m), rp].to(self.clean[("resid_pre", 0)].dtype)).float().cpu()
        wrong = self.wrong[pt] if self.wrong is not None else None
        return self.metric.compute(picked, self.answer[pt], wrong, self.clean_logits[pt]).numpy()

    def metrics(self, columns, progress: bool = False) -> np.ndarray:
        """[n_prompts, n_columns]: the metric with each column's edges (indices into `edges`) removed."""
        n = self.data.n
        cols = [tuple(sorted(set(int(i) for i in c))) for c in columns]
        for c, col in enumerate(cols):
            if col and not (0 <= col[0] and col[-1] < len(self.edges)):
                raise ScanError(f"columns[{c}] has an edge index outside 0..{len(self.edges) - 1}")
        removed = self._removed(cols)
        rows = self.rows
        if self.batch_size is None:   # a row also keeps every node's actual contribution between passes
            extra = (len(self.nodes) + 2) * self.tokens.shape[1] * self.model.d_model * 4
            rows = P.rows_per_pass(len(cols) * n, self.per_row + extra, self.fixed, self.budget, None,
                                   self.model.device.type == "cpu")
        rows_all = np.arange(len(cols) * n)
        values = np.full(len(rows_all), np.nan)
        from tqdm.auto import tqdm
        with tqdm(total=len(rows_all), disable=not progress, desc=f"edge circuits {len(cols)} x {n} prompts",
                  unit="row") as bar:
            for r0, r1 in P.chunks(len(rows_all), rows):
                values[r0:r1] = self._rows(rows_all[r0:r1] // n, rows_all[r0:r1] % n, removed)
                bar.update(r1 - r0)
        table = values.reshape(len(cols), n).T
        check_finite(table, "the edge-ablated runs")
        return table


def edge_ablated_metrics(model, data, edges, columns, intervention, metric=None, *, batch_size=None,
                         memory_budget="2GB", cache=None, progress=False):
    """Per-prompt metric with each column's edges removed: ([n_prompts, n_columns], the `EdgeRun`).

    `columns` are tuples of indices into `edges` (the removed edges); an empty column is the clean run
    (up to float rounding of the recomputation).
    """
    run = EdgeRun(model, data, edges, intervention, metric, batch_size=batch_size, memory_budget=memory_budget,
                  cache=cache)
    return run.metrics(columns, progress=progress), run
