"""Feature-level claims: subspaces, SAE features and probes as sites, tested with the same statistics.

    ci.sites.subspace(component, layer, position, basis)   patch only the span of an orthonormal basis
    ci.sites.sae_features(sae, features, positions)         patch/ablate SAE latents (error term kept)
    ci.probe(model, data, site, labels)                     cross-validated linear probe with a control task
    ci.das(model, train, site, dim=k)                       distributed alignment search (held-out evaluation)

The site classes live in `causalinterp.spec.features` (specs); fitting (probes, SAEs, DAS) lives here.

Examples:
    >>> import causalinterp as ci
    >>> model, data = ci.load_model("testbed:induction"), ci.features.copy_choice_data(40)
    >>> u = ci.features.known_direction(model)          # the "copy t0 rather than t1" direction
    >>> eff = ci.scan(model, data, ci.sites.subspace("resid_post", 1, "end", u), progress=False)
    >>> bool((eff.values[:, 0] > 0).mean() > 0.9)      # patching 1 of 64 dimensions flips the copied token
    True
"""
from ..spec.features import (Feature, FeatureError, FeatureSite, SAEFeatures, Subspace, orthonormalize,
                             sae_features, subspace)
from .activations import collect
from .das import DASEvaluation, DASResult, das, random_subspace_sites
from .groundtruth import copy_choice_data, known_direction
from .heldout import HeldOutError
from .probe import ProbeResult, control_labels, probe
from .sae import SparseAutoencoder, load_sae, sae_stats, save_sae, testbed_sae_path, train_sae

__all__ = ["DASEvaluation", "DASResult", "Feature", "FeatureError", "FeatureSite", "HeldOutError", "ProbeResult",
           "SAEFeatures", "SparseAutoencoder", "Subspace", "collect", "control_labels", "copy_choice_data", "das",
           "known_direction", "load_sae", "orthonormalize", "probe", "random_subspace_sites", "sae_features",
           "sae_stats", "save_sae", "subspace", "testbed_sae_path", "train_sae"]
