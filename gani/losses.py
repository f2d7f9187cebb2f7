"""The similarity loss of the paper's Eq. 1 (docs/method.md#similarity-loss), per sample.

    L_sim(x, y) = λ_rec·rec(x, y) + λ_lpips·LPIPS(x, y) + λ_id·(1 − cos(F(x), F(y)))
                + λ_parse·Σ_{k=1..5} (1 − cos(P_k(x), P_k(y)))

- rec: "l2" = mean squared error over C·H·W, or "smooth_l1" = Huber with β = 1 (Fast R-CNN),
  mean over C·H·W; images in [−1, 1].
- LPIPS: any callable (x, y) → per-image distance (the `lpips` package, AlexNet, v0.1);
  inputs larger than 256 px are average-pooled to 256 first (pSp's face_pool;
  docs/method.md#performance-model).
- F: an identity feature network. Faces (ArcFace IR-SE50 / CurricularFace IR-101) get the
  pSp/e4e crop-and-pool to 112 px (`gani.models.irse.id_crop_pool`); MoCo gets the raw image
  (its wrapper resizes). Embeddings are L2-normalised here before the cosine.
- P_k: the 5 contracting-path feature maps of the MaskGAN parsing U-Net; each map is
  flattened per image and compared by cosine; the 5 distances are summed.

A term whose λ is 0 or whose network is absent is skipped — it is not evaluated and does not
appear in the parts dict (never a made-up zero). Every value is per sample, shape [B], so
batched tuning can sum independent images' losses.

The target side of the id and parsing terms is fixed during tuning: `prepare(target)` computes
it once and returns a `LossTarget` that `forward` accepts in place of the raw target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from gani.config.schema import LossWeights, RegularizerSection

TERMS = ("rec", "lpips", "id", "parse")
LPIPS_SIZE = 256
PARSER_SIZE = 512


def rec_loss(x: torch.Tensor, y: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Per-image pixel loss [B]: 'l2' (MSE) or 'smooth_l1' (Huber, β = 1), mean over C·H·W."""
    if kind == "l2":
        d = (x - y) ** 2
    elif kind == "smooth_l1":
        d = F.smooth_l1_loss(x, y, reduction="none", beta=1.0)
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r} (l2 | smooth_l1)")
    return d.flatten(1).mean(1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cos between per-image flattened features [B, ...] → [B]."""
    return 1.0 - F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1, eps=1e-8)


def resize_to(x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """Average-pool down (pSp's face_pool) or bilinearly up to size × size; None = as is."""
    if size is None or x.shape[-2:] == (size, size):
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, (size, size))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _per_image(d, batch: int) -> torch.Tensor:
    """A network's distances ([B] or [B, 1, 1, 1]) → [B]; a batch mean is an error."""
    d = torch.as_tensor(d)
    if d.dim() == 0 or d.shape[0] != batch:
        raise ValueError(f"LPIPS returned shape {tuple(d.shape)} for a batch of {batch}: "
                         "per-image distances are needed (no batch mean)")
    return d.reshape(batch, -1).mean(1)


@dataclass
class LossTarget:
    """A target image with its fixed features (identity embedding, parsing maps) cached."""

    image: torch.Tensor
    id_feat: Optional[torch.Tensor] = None
    parse_feats: Optional[list] = None

    def __getitem__(self, idx) -> "LossTarget":
        """The same target restricted to images `idx` (a slice or index tensor)."""
        return LossTarget(
            self.image[idx],
            None if self.id_feat is None else self.id_feat[idx],
            None if self.parse_feats is None else [f[idx] for f in self.parse_feats])


class SimilarityLoss(nn.Module):
    """Paper Eq. 1 with its λs from `LossWeights`; `forward(x, target) -> (total[B], parts)`.

    lpips: callable (x, y) → distances [B] (or [B,1,1,1]); inputs in [−1, 1].
    identity: callable images → embeddings [B, D]; identity_input maps a [−1, 1] image to the
    network's input (e.g. `id_crop_pool` for face nets; None = the image itself).
    parser: the parsing U-Net (its `contracting_features` is used) or any callable images →
    sequence of 5 feature maps; parser_size: its input size.
    """

    def __init__(self, weights: Optional[LossWeights] = None, *, lpips: Optional[Callable] = None,
                 identity: Optional[Callable] = None,
                 identity_input: Optional[Callable] = None, parser: Optional[Callable] = None,
                 lpips_size: Optional[int] = LPIPS_SIZE,
                 parser_size: Optional[int] = PARSER_SIZE):
        super().__init__()
        w = weights if weights is not None else LossWeights()
        self.weights = w
        self.rec_kind = w.rec
        # plain attributes, not submodules: the nets are frozen and shared between losses
        self.__dict__["lpips_net"] = lpips
        self.__dict__["identity_net"] = identity
        self.__dict__["identity_input"] = identity_input
        self.__dict__["parser_net"] = parser
        self.lpips_size, self.parser_size = lpips_size, parser_size
        self.lambdas = {"rec": w.lambda_rec, "lpips": w.lambda_lpips, "id": w.lambda_id,
                        "parse": w.lambda_parse}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_nets(cls, weights: LossWeights, nets=None) -> "SimilarityLoss":
        """Build from a `gani.checkpoints.build.SimilarityNets` (lpips, identity,
        identity_kind, parser); None = no networks (only the pixel term is active)."""
        if nets is None:
            return cls(weights)
        id_input = None
        if getattr(nets, "identity", None) is not None and nets.identity_kind != "moco":
            from gani.models.irse import id_crop_pool

            id_input = id_crop_pool
        return cls(weights, lpips=nets.lpips, identity=nets.identity, identity_input=id_input,
                   parser=nets.parser)

    def _derived(self, **lambdas) -> "SimilarityLoss":
        w = self.weights.model_copy(update=lambdas)
        return SimilarityLoss(w, lpips=self.lpips_net, identity=self.identity_net,
                              identity_input=self.identity_input, parser=self.parser_net,
                              lpips_size=self.lpips_size, parser_size=self.parser_size)

    def restricted(self, terms: Sequence[str]) -> "SimilarityLoss":
        """The same loss with every term outside `terms` switched off (PTI: rec + lpips)."""
        off = {f"lambda_{t}": 0.0 for t in TERMS if t not in terms}
        return self._derived(**off)

    def regularizer(self, reg: RegularizerSection) -> "SimilarityLoss":
        """The loss of Eq. 5's localization term: λ_R,rec·rec + λ_R,lpips·LPIPS (no id/parse)."""
        return self._derived(lambda_rec=reg.lambda_rec, lambda_lpips=reg.lambda_lpips,
                             lambda_id=0.0, lambda_parse=0.0)

    # ------------------------------------------------------------------ terms
    def active_terms(self) -> list[str]:
        nets = {"rec": True, "lpips": self.lpips_net is not None,
                "id": self.identity_net is not None, "parse": self.parser_net is not None}
        return [t for t in TERMS if self.lambdas[t] > 0 and nets[t]]

    def skipped_terms(self) -> dict[str, str]:
        """Terms not evaluated, with the reason (for logs and docs)."""
        out = {}
        nets = {"lpips": self.lpips_net, "id": self.identity_net, "parse": self.parser_net}
        for t in TERMS:
            if self.lambdas[t] <= 0:
                out[t] = "lambda is 0"
            elif t != "rec" and nets[t] is None:
                out[t] = "no network configured"
        return out

    def _id_features(self, x: torch.Tensor) -> torch.Tensor:
        inp = self.identity_input(x) if self.identity_input is not None else x
        return F.normalize(self.identity_net(inp).flatten(1).float(), dim=1)

    def _parse_features(self, x: torch.Tensor) -> list:
        net = self.parser_net
        fn = getattr(net, "contracting_features", net)  # gani.models.parsing.FaceParsingUNet
        feats = fn(resize_to(x, self.parser_size))
        if isinstance(feats, dict):
            feats = list(feats.values())
        return list(feats)

    @torch.no_grad()
    def prepare(self, target: torch.Tensor) -> LossTarget:
        """Cache the target-side features of the active terms."""
        active = self.active_terms()
        return LossTarget(
            target,
            self._id_features(target).detach() if "id" in active else None,
            [f.detach() for f in self._parse_features(target)] if "parse" in active else None)

    def forward(self, x: torch.Tensor, target: Union[torch.Tensor, LossTarget]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x, target: [B, 3, H, W] in [−1, 1] → (weighted total [B], {term: unweighted [B]})."""
        if not isinstance(target, LossTarget):
            target = LossTarget(target)
        y = target.image
        parts: dict[str, torch.Tensor] = {}
        active = self.active_terms()
        if "rec" in active:
            parts["rec"] = rec_loss(x.float(), y.float(), self.rec_kind)
        if "lpips" in active:
            parts["lpips"] = _per_image(self.lpips_net(resize_to(x, self.lpips_size),
                                                       resize_to(y, self.lpips_size)),
                                        x.shape[0]).float()
        if "id" in active:
            fy = target.id_feat if target.id_feat is not None else self._id_features(y).detach()
            parts["id"] = cosine_distance(self._id_features(x), fy)
        if "parse" in active:
            fys = (target.parse_feats if target.parse_feats is not None
                   else [f.detach() for f in self._parse_features(y)])
            fxs = self._parse_features(x)
            if len(fxs) != len(fys):
                raise ValueError(f"parser returned {len(fxs)} maps for x, {len(fys)} for y")
            parts["parse"] = sum(cosine_distance(a, b) for a, b in zip(fxs, fys))
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for name, value in parts.items():
            total = total + self.lambdas[name] * value
        return total, parts
