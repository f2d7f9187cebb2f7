"""Identity similarity: face embeddings (IR-101 CurricularFace / IR-SE50) or MoCo features.

Two input protocols for faces (docs/protocols.md#identity-metric):

``"template"`` (default; HyperStyle's ID metric with one substitution)
    Each 256 image is aligned to 112 × 112 by the 5-point similarity transform onto the
    ArcFace template (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
    (41.5493, 92.3655), (70.7299, 92.2041), bilinear with a zero border (cv2.warpAffine
    semantics), then fed as RGB in [−1, 1]. HyperStyle finds the 5 points with MTCNN, whose
    weights are not available here; we take them from dlib's 68 landmarks (eye centres =
    means of 36-41 / 42-47, nose tip 30, mouth corners 48 / 54). The points differ slightly
    from MTCNN's, so values are close to, not identical with, published tables. An image in
    which no face is found gets no score (None), as HyperStyle skips such images.
``"crop"`` (pSp/e4e ID loss, docs/checkpoints.md#id-crop)
    Rows 35:223, cols 32:220 of the 256 image, AdaptiveAvgPool2d(112). No detector needed.

Non-face domains (MoCo v2 ResNet-50, docs/checkpoints.md#moco-v2-resnet-50): nearest
resize to 224 of the raw [−1, 1] image (no ImageNet normalisation), features flattened and
L2-normalised.
Similarity = dot product of the normalised features (cosine).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
    [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)

ID_CROP_ROWS = (35, 223)
ID_CROP_COLS = (32, 220)
ID_PROTOCOLS = ("template", "crop")


def _module_device(net: Any, default: torch.device) -> torch.device:
    try:
        return next(net.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return default


def face_id_input(x: torch.Tensor) -> torch.Tensor:
    """pSp/e4e ID crop of a [B, 3, 256, 256] tensor → [B, 3, 112, 112]."""
    if x.shape[-2:] != (256, 256):
        x = F.adaptive_avg_pool2d(x, (256, 256))
    x = x[:, :, ID_CROP_ROWS[0]:ID_CROP_ROWS[1], ID_CROP_COLS[0]:ID_CROP_COLS[1]]
    return F.adaptive_avg_pool2d(x, (112, 112))


def moco_input(x: torch.Tensor) -> torch.Tensor:
    """e4e/HyperStyle MoCo input: nearest resize to 224 of the raw [−1, 1] image."""
    return F.interpolate(x, size=224)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """dlib 68 → the 5 ArcFace points: left eye, right eye, nose tip, mouth left, right."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) with dst ≈ M·[src;1].

    Returns the 2×3 matrix M (Umeyama's closed form, no reflection).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / s0.var(0).sum()
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def warp_to_template(img: Image.Image, points5: np.ndarray, size: int = 112) -> Image.Image:
    """Warp `img` so its 5 points land on the ArcFace template (bilinear, zero border).

    M maps source pixel-index coordinates to output ones (cv2 convention: pixel centres at
    integers). PIL wants the inverse map in its own convention (centres at i + 0.5), so
    x_src' = A⁻¹(x_out' − 0.5 − t) + 0.5 with the primes denoting PIL coordinates.
    """
    m = similarity_transform(points5, ARCFACE_TEMPLATE_112 * (size / 112.0))
    a, t = m[:, :2], m[:, 2]
    ai = np.linalg.inv(a)
    c = ai @ (-0.5 - t) + 0.5
    data = (ai[0, 0], ai[0, 1], c[0], ai[1, 0], ai[1, 1], c[1])
    return img.transform((size, size), Image.Transform.AFFINE, data,
                         Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def template_id_input(x: torch.Tensor, landmarks68=None) -> Optional[torch.Tensor]:
    """Align one [1, 3, H, W] [−1, 1] image to 112 with dlib 5 points; None if no face."""
    from gani.alignment.landmarks import LandmarkError, detect_landmarks

    from .preprocess import tensor2im

    img = tensor2im(x)
    if landmarks68 is None:
        try:
            landmarks68 = detect_landmarks(img, "dlib", multi_face="largest")
        except LandmarkError:
            return None
    face = warp_to_template(img, five_points(landmarks68))
    arr = torch.from_numpy(np.asarray(face, dtype=np.float32).copy()).permute(2, 0, 1)
    return (arr / 255.0 - 0.5).div(0.5).unsqueeze(0)


def _embed(id_net: Callable, x: torch.Tensor) -> torch.Tensor:
    dev = _module_device(id_net, x.device)
    e = torch.as_tensor(id_net(x.to(dev))).float().cpu()
    e = e.reshape(e.shape[0], -1)
    return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def id_similarity(id_net: Optional[Callable], recon: torch.Tensor, target: torch.Tensor,
                  kind: str = "face", protocol: str = "template") -> Optional[torch.Tensor]:
    """Per-image cosine similarity [B] (NaN where no face was found), or None without a net.

    kind: "face" (IR-101 / IR-SE50) or "moco"; protocol (faces): "template" | "crop".
    """
    if id_net is None:
        return None
    if kind not in ("face", "moco"):
        raise ValueError(f"id kind must be 'face' or 'moco', got {kind!r}")
    if protocol not in ID_PROTOCOLS:
        raise ValueError(f"id protocol must be one of {ID_PROTOCOLS}, got {protocol!r}")
    was_training = getattr(id_net, "training", False)
    if hasattr(id_net, "eval"):
        id_net.eval()
    try:
        if kind == "moco":
            a, b = _embed(id_net, moco_input(recon.float())), _embed(id_net,
                                                                   moco_input(target.float()))
            return (a * b).sum(1)
        if protocol == "crop":
            a, b = _embed(id_net, face_id_input(recon.float())), _embed(
                id_net, face_id_input(target.float()))
            return (a * b).sum(1)
        out = []
        for i in range(recon.shape[0]):
            xa = template_id_input(recon[i:i + 1])
            xb = template_id_input(target[i:i + 1])
            if xa is None or xb is None:
                out.append(float("nan"))
                continue
            e = _embed(id_net, torch.cat([xa, xb]))
            out.append(float((e[0] * e[1]).sum()))
        return torch.tensor(out)
    finally:
        if was_training and hasattr(id_net, "train"):
            id_net.train()
