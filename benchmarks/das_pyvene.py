"""DAS with pyvene vs causalinterp on the same data (induction testbed, copy-choice, resid_post L1 @end, dim 1).

pyvene is not a dependency: `pip install --no-deps --target DIR pyvene` (0.1.8 imports without its plotting
dependencies), then `PYTHONPATH=DIR python -m benchmarks.das_pyvene`.  Not part of `python -m benchmarks`.
"""
import time, numpy as np, torch
import pyvene as pv
import causalinterp as ci
torch.set_num_threads(1)
model = ci.load_model("testbed:induction"); hf = model.hf
disc, conf = ci.features.copy_choice_data(120, seed=0).split(0.5, seed=0)
u = ci.features.known_direction(model)
def tok(d, w): return d.tokens(w)
torch.manual_seed(0)
cfg = pv.IntervenableConfig(representations=[pv.RepresentationConfig(layer=1, component="block_output", unit="pos",
        max_number_of_units=1, low_rank_dimension=1)], intervention_types=pv.LowRankRotatedSpaceIntervention)
iv = pv.IntervenableModel(cfg, hf); iv.set_device("cpu"); iv.disable_model_gradients()
opt = torch.optim.Adam([p for k, v in iv.interventions.items() for p in (v[0] if isinstance(v, tuple) else v).parameters()], lr=1e-2)
def run(d, idx):
    p = [[[d.position_index("end", i)] for i in idx]]
    _, out = iv({"input_ids": tok(d, "corrupt")[idx]}, [{"input_ids": tok(d, "clean")[idx]}],
                {"sources->base": (p, p)})
    end = torch.tensor([d.position_index("end", i) for i in idx])
    return out.logits[torch.arange(len(idx)), end]
t = time.time()
g = torch.Generator().manual_seed(0)
for step in range(100):
    idx = torch.randperm(disc.n, generator=g)[:64]
    loss = torch.nn.functional.cross_entropy(run(disc, idx), torch.tensor(disc.answer)[idx])
    opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad():
    lg = run(conf, torch.arange(conf.n))
iia = float((lg.argmax(-1) == torch.tensor(conf.answer)).float().mean())
inter = list(iv.interventions.values())[0]; inter = inter[0] if isinstance(inter, tuple) else inter
W = inter.rotate_layer.weight.detach()  # [d, k]
cos_pv = float((W[:, 0] / W[:, 0].norm() @ u).abs())
t_pv = time.time() - t
t = time.time()
ours = ci.das(model, disc, ci.Site("resid_post", 1, position="end"), dim=1, steps=100, batch_size=64)
ev = ours.evaluate(model, conf, n_random=20, n_resamples=999)
t_ours = time.time() - t
cos_ours = float((ours.basis @ u).abs())
cos_between = float((ours.basis[0] @ (W[:, 0] / W[:, 0].norm())).abs())
print(f"pyvene {pv.__name__} DAS: held-out IIA {iia:.3f}, |cos(known)| {cos_pv:.3f}, {t_pv:.1f} s")
print(f"causalinterp DAS: held-out IIA {ev.iia:.3f} {ev.iia_ci}, |cos(known)| {cos_ours:.3f}, {t_ours:.1f} s (incl. evaluation)")
print(f"|cos| between the two learned directions: {cos_between:.3f}")
