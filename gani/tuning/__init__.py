"""Per-image generator tuning: GANI (the paper) and its baselines in one harness.

    results = tune_images(method, G, targets, w_init, cfg.tune, loss)

method: gani | pti | wplus_projection | w_projection | e4e. Each result is a `TunedImage`
(latent, weight deltas, loss curve, error, seconds); `render(G, result)` draws it and
`gani.tuning.artifact` saves it compactly.
"""
from .api import METHODS, tune_images
from .artifact import load_artifact, save_artifact
from .gani import loss_gradients, rebuild_gani_deltas, tune_gani
from .projection import tune_projection
from .pti import tune_pti
from .result import TunedImage, TuningOOM, render

__all__ = ["METHODS", "TunedImage", "TuningOOM", "load_artifact", "loss_gradients",
           "rebuild_gani_deltas", "render", "save_artifact", "tune_gani", "tune_images",
           "tune_pti", "tune_projection"]
