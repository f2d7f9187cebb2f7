"""Stage 2, encode: the initial W+ latent of each aligned image.

`encode.method: e4e` runs the encoder (w = E(x) + latent_avg). Domains without an encoder
(AFHQ-Wild) or `encode.method: w_projection | wplus_projection` project instead, with the
tuning harness's projector. Writes `e4e_latent.pt` ([1, n_latent, style_dim]) and
`e4e.png` (the original generator at that latent).
"""
from __future__ import annotations

import torch

from gani.config import Settings
from gani.metrics.preprocess import tensor2im

from .common import fresh, image_to_tensor, load_png, mark, png_bytes, propagate, tensor_bytes, upstream
from .layout import Layout
from .plan import ImageItem
from .runtime import Runtime

STAGE = "encode"
ENCODER_SIZE = 256


def initial_latents(rt: Runtime, settings: Settings, aligned: list) -> torch.Tensor:
    """W+ latents [B, n_latent, style_dim] for a list of aligned PIL images."""
    method = settings.encode.method
    if method == "e4e" and rt.encoder is not None:
        xs = []
        # the encoder's input size: 256 (e4e), or what a small encoder was trained on (the
        # testbed's reads 64 px: `input_size` on the module)
        square = int(getattr(rt.encoder, "input_size", None) or ENCODER_SIZE)
        for img in aligned:
            size = (img.height, img.width) if img.height != img.width else (square,) * 2
            xs.append(image_to_tensor(img, size))
        x = torch.cat(xs).to(rt.device)
        with torch.no_grad():
            deltas = rt.encoder(x)
        return (deltas + rt.encoder_latent_avg.unsqueeze(0)).float()
    from .tune import project

    proj = "w_projection" if method == "e4e" else method  # no encoder: project in W
    return project(rt, settings, aligned, proj)


def encode_image(item: ImageItem, layout: Layout, settings: Settings, rt: Runtime) -> ImageItem:
    if fresh(layout, item, STAGE):
        return item
    up = upstream(layout, item, STAGE)
    if up["state"] != "done":
        return propagate(layout, item, STAGE, up)
    aligned = load_png(layout.read(item.image_id, "aligned"))
    w = initial_latents(rt, settings, [aligned])
    with torch.no_grad():
        img = rt.G.synthesis(w, noise_mode="const")
    layout.write(item.image_id, "e4e_latent", tensor_bytes(w))
    layout.write(item.image_id, "e4e", png_bytes(tensor2im(img[0])))
    return mark(layout, item, STAGE, "done", method=settings.encode.method)
