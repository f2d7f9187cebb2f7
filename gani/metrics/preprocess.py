"""The metric preprocessing of HyperStyle's evaluation scripts
(docs/protocols.md#metric-preprocessing).

Published tables were computed on images *saved to disk* and read back, so to make our
numbers comparable every image goes through the same path:

1. a generator output (float tensor in [−1, 1]) becomes uint8 like the reference
   `tensor2im`: (x + 1) / 2, clip to [0, 1], × 255, then truncation (astype uint8), not
   rounding. Quirk kept on purpose: truncation darkens by 0.5 level on average, and a
   value of exactly 1.0 maps to 255 while 0.999 maps to 254.
2. torchvision `Resize((256, 256))` on the PIL image (PIL bilinear with antialias; aspect
   ratio NOT kept: a 192 × 256 car is stretched to 256 × 256, as in the reference);
3. ToTensor, Normalize(0.5, 0.5) → [−1, 1], float32, [1, 3, 256, 256].
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
from PIL import Image

METRIC_SIZE = 256

ImageLike = Union[Image.Image, np.ndarray, torch.Tensor]


def tensor2im(x: torch.Tensor) -> Image.Image:
    """One image [3, H, W] or [1, 3, H, W] in [−1, 1] → PIL RGB uint8 (truncation)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError("tensor2im takes one image; index the batch first")
        x = x[0]
    arr = x.detach().to("cpu", torch.float32).numpy().transpose(1, 2, 0)
    arr = np.clip((arr + 1) / 2, 0, 1) * 255
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def tensors2ims(x: torch.Tensor) -> list[Image.Image]:
    """A batch [B, 3, H, W] in [−1, 1] → list of PIL images (tensor2im each)."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    return [tensor2im(x[i]) for i in range(x.shape[0])]


def to_pil(img: ImageLike) -> Image.Image:
    """PIL as is (converted to RGB); uint8 HWC arrays; [−1, 1] tensors via tensor2im."""
    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    if isinstance(img, torch.Tensor):
        return tensor2im(img)
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise TypeError("numpy images must be uint8 HxWx3; pass float images as tensors")
    return Image.fromarray(arr, "RGB")


def metric_tensor(img: ImageLike, size: int = METRIC_SIZE) -> torch.Tensor:
    """Steps 1-3 above: any image → float32 [1, 3, size, size] in [−1, 1]."""
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ])
    return tf(to_pil(img)).unsqueeze(0)


def metric_batch(imgs, size: int = METRIC_SIZE) -> torch.Tensor:
    """A batch tensor [B, 3, H, W] in [−1, 1] or a list of images → [B, 3, size, size]."""
    if isinstance(imgs, torch.Tensor) and imgs.dim() == 4:
        items = [imgs[i] for i in range(imgs.shape[0])]
    elif isinstance(imgs, (list, tuple)):
        items = list(imgs)
    else:
        items = [imgs]
    return torch.cat([metric_tensor(i, size) for i in items])
