"""Networks that load the official checkpoints unchanged (docs/checkpoints.md).

- ``Generator`` (rosinality StyleGAN2) and ``load_stylegan2_checkpoint``
- ``E4EEncoder`` and ``load_e4e_checkpoint`` (encoder + decoder + latent_avg)
- ``IRSE50`` (ArcFace, ID loss), ``IR101`` (CurricularFace, ID metric), ``id_crop_pool``
- ``MocoResNet50`` (MoCo v2 features, non-face ID), ``FaceParsingUNet`` (MaskGAN parser)
- ``LPIPSAlex`` (lpips package, local AlexNet file)
"""
from .e4e import E4EEncoder, e4e_checkpoint, encoder_config_from_state_dict, load_e4e_checkpoint
from .irse import IR101, IRSE50, Backbone, id_crop_pool, load_ir101, load_irse50
from .lpips_net import ALEXNET_FILE, LPIPSAlex, load_lpips
from .moco import MocoResNet50, load_moco, moco_state_dict
from .parsing import FaceParsingUNet, load_face_parser
from .stylegan2 import (NOISE_MODES, Generator, channel_table, generator_config_from_state_dict,
                        load_stylegan2_checkpoint, rosinality_checkpoint)
from .upfirdn2d import upfirdn2d

__all__ = [
    "ALEXNET_FILE", "Backbone", "E4EEncoder", "FaceParsingUNet", "Generator", "IR101", "IRSE50",
    "LPIPSAlex", "MocoResNet50", "NOISE_MODES", "channel_table", "e4e_checkpoint",
    "encoder_config_from_state_dict", "generator_config_from_state_dict", "id_crop_pool",
    "load_e4e_checkpoint", "load_face_parser", "load_ir101", "load_irse50", "load_lpips",
    "load_moco", "load_stylegan2_checkpoint", "moco_state_dict", "rosinality_checkpoint",
    "upfirdn2d",
]
