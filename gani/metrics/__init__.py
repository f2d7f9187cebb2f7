"""Evaluation metrics to the published protocol plus locality and cost
(docs/protocols.md#metric-protocol)."""
from .core import (METRIC_KEYS, compute_metrics, l2, locality, locality_latents, lpips_distance,
                   summarize)
from .identity import (ARCFACE_TEMPLATE_112, face_id_input, five_points, id_similarity,
                       moco_input, similarity_transform, template_id_input, warp_to_template)
from .ms_ssim import (MS_SSIM_WEIGHTS, gaussian_window, guess_dynamic_range, ms_ssim,
                      ms_ssim_one, nanmean_dropping, ssim_and_cs)
from .preprocess import METRIC_SIZE, metric_batch, metric_tensor, tensor2im, tensors2ims, to_pil
from .profiling import ResourceMeter

__all__ = [
    "ARCFACE_TEMPLATE_112", "METRIC_KEYS", "METRIC_SIZE", "MS_SSIM_WEIGHTS", "ResourceMeter",
    "compute_metrics", "face_id_input", "five_points", "gaussian_window",
    "guess_dynamic_range", "id_similarity", "l2", "locality", "locality_latents",
    "lpips_distance", "metric_batch", "metric_tensor", "moco_input", "ms_ssim", "ms_ssim_one",
    "nanmean_dropping", "similarity_transform", "ssim_and_cs", "summarize",
    "template_id_input", "tensor2im", "tensors2ims", "to_pil", "warp_to_template",
]
