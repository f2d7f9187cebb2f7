"""Every official checkpoint the project knows: file name, size/sha256 when published,
source, licence and domain (docs/checkpoints.md#registry).

Nothing is downloaded by this code: users fetch the files from the sources below (or
`dvc pull` them from their team's remote) and `gani checkpoints import` them into
`data/checkpoints/`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

NC = "research/non-commercial (NVIDIA Source Code License-NC / CC BY-NC 4.0)"


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    file: str
    kind: str  # generator | encoder | identity | parser | lpips | landmarks
    domains: tuple[str, ...]
    source: str
    licence: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    note: str = ""
    packaged: Optional[str] = None  # path under the gani package when the file ships with it


TESTBED = ("the testbed trained in this repository (benchmarks/testbed/README.md); ships "
           "inside the gani package, gani/testbed/assets/")
TESTBED_LICENCE = "this project's licence (trained here on procedural faces, no external data)"


def _testbed(name: str, file: str, kind: str, size: int, sha256: str, note: str
             ) -> CheckpointSpec:
    return CheckpointSpec(name, file, kind, ("demo",), TESTBED, TESTBED_LICENCE, size=size,
                          sha256=sha256, note=note, packaged=f"testbed/assets/{file}")


REGISTRY: dict[str, CheckpointSpec] = {c.name: c for c in [
    CheckpointSpec(
        "stylegan2-ffhq-config-f", "stylegan2-ffhq-config-f.pt", "generator", ("ffhq",),
        "Google Drive id 1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT (rosinality conversion, as linked "
        "by pSp/e4e/HyperStyle)", NC, note="1024 px, channel multiplier 2; g_ema + latent_avg"),
    CheckpointSpec(
        "stylegan2-car-config-f", "stylegan2-car-config-f.pt", "generator", ("cars",),
        "Google Drive id 1UmMHHB3DU1trTB8_9Fjkck5ZwArnD81B (HyperStyle README)", NC,
        note="512 px"),
    CheckpointSpec(
        "stylegan2-church-config-f", "stylegan2-church-config-f.pt", "generator", ("church",),
        "convert NVIDIA's stylegan2-church-config-f.pkl with rosinality convert_weight.py, or "
        "use the decoder inside e4e_church_encode.pt", NC, note="256 px"),
    CheckpointSpec(
        "stylegan2-horse-config-f", "stylegan2-horse-config-f.pt", "generator", ("horse",),
        "convert NVIDIA's stylegan2-horse-config-f.pkl with rosinality convert_weight.py, or "
        "use the decoder inside e4e_horse_encode.pt", NC, note="256 px"),
    CheckpointSpec(
        "stylegan2-afhqwild", "stylegan2-afhqwild.pt", "generator", ("afhq_wild",),
        "convert NVIDIA's StyleGAN2-ADA afhqwild.pkl to the rosinality layout", NC,
        note="512 px; no e4e exists for this domain (W projection init)"),
    CheckpointSpec(
        "e4e_ffhq_encode", "e4e_ffhq_encode.pt", "encoder", ("ffhq",),
        "Google Drive id 1cUv_reLE6k3604or78EranS7XzuVMWeO (omertov/encoder4editing README)",
        "e4e code MIT; weights trained on FFHQ (CC BY-NC-SA 4.0 data)", size=1_201_649_680,
        sha256="2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999",
        note="hash is a third-party record"),
    CheckpointSpec(
        "e4e_cars_encode", "e4e_cars_encode.pt", "encoder", ("cars",),
        "Google Drive id 17faPqBce2m1AQeLCLHUVXaDfxMRU2QcV (e4e README)", "e4e code MIT"),
    CheckpointSpec(
        "e4e_horse_encode", "e4e_horse_encode.pt", "encoder", ("horse",),
        "Google Drive id 1TkLLnuX86B_BMo2ocYD0kX9kWh53rUVX (e4e README)", "e4e code MIT"),
    CheckpointSpec(
        "e4e_church_encode", "e4e_church_encode.pt", "encoder", ("church",),
        "Google Drive id 1-L0ZdnQLwtdy6-A_Ccgq5uNJGTqE7qBa (e4e README)", "e4e code MIT"),
    CheckpointSpec(
        "arcface", "model_ir_se50.pth", "identity", ("ffhq",),
        "Google Drive id 1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn (pSp/e4e README; TreB1eN original)",
        "MIT (InsightFace_Pytorch)", note="IR-SE50, the ID loss of pSp/e4e"),
    CheckpointSpec(
        "curricularface", "CurricularFace_Backbone.pth", "identity", ("ffhq",),
        "Google Drive id 1f4IwVa2-Bn9vWLwB-bUwm53U_MlvinAj (pSp/HyperStyle README)",
        "MIT (CurricularFace)", note="IR-101, the ID metric of HyperStyle tables"),
    CheckpointSpec(
        "moco", "moco_v2_800ep_pretrain.pth.tar", "identity",
        ("cars", "church", "horse", "afhq_wild"),
        "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/"
        "moco_v2_800ep_pretrain.pth.tar", "CC BY-NC 4.0 (facebookresearch/moco)",
        note="md5 prefix a04e12f8 (official README)"),
    CheckpointSpec(
        "maskgan_parser", "model.pth", "parser", ("ffhq",),
        "Google Drive id 1o1m-eT38zNCIFldcRaoWcLvvBtY8S4W3 (switchablenorms/CelebAMask-HQ)",
        "CC BY-NC-SA 4.0 (CelebAMask-HQ)", note="U-Net; 5 contracting-path features"),
    CheckpointSpec(
        "alexnet", "alexnet-owt-7be5be79.pth", "lpips", ("ffhq", "cars", "church", "horse",
                                                           "afhq_wild"),
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision "
        "AlexNet_Weights.IMAGENET1K_V1)", "BSD-3-Clause (torchvision)",
        note="LPIPS trunk; the LPIPS linear heads ship inside the lpips package"),
    CheckpointSpec(
        "dlib_68", "shape_predictor_68_face_landmarks.dat", "landmarks", ("ffhq",),
        "ships inside the face-recognition-models PyPI package (installed with this project); "
        "also http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2",
        "model trained on iBUG 300-W: non-commercial use only", size=99_693_937,
        sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"),
    # The trained testbed (issue 14): the demo profile's networks. Hashes are of the files
    # committed with the code; a changed file is refused at load (exit status 3).
    _testbed("testbed-generator", "g_ema.safetensors", "generator", 6_664_620,
             "c9d94d7ac070e38a3345ee3348e6160e175f847017e7bbaf138d5de16415025a",
             "32 px StyleGAN2 g_ema (98 kimg); its architecture is testbed-generator-config"),
    _testbed("testbed-generator-config", "generator.json", "config", 169,
             "9efa6fda2275bd37c34c960002e29db93dbd3220f08652f38cc5942f32d3be98",
             "Generator(**json) of testbed-generator"),
    _testbed("testbed-e4e", "e4e_encoder.safetensors", "encoder", 8_175_912,
             "31fafc501639ac2746c0d477912f8d3e40c0bfa2654905bc06025600b330319b",
             "e4e (width_div 8, reads 64 px) for testbed-generator; config testbed-e4e-config"),
    _testbed("testbed-e4e-config", "e4e_encoder.json", "config", 256,
             "9f67c2f104282c583c61ce08866d86e3b2d776de2d58d74affc7b38f8ed21f41",
             "architecture and training record of testbed-e4e"),
    _testbed("testbed-directions", "directions.pt", "directions", 15_541,
             "73895d0975f32650aa8be2f0f964da2fdaf4eed0449223ae52ab2b867e2d0a55",
             "InterFaceGAN-style unit directions in W, one per attribute ({name: [1, 256]})"),
    _testbed("testbed-ganspace", "ganspace_pca.pt", "pca", 11_342,
             "335e47082d51db03b4c83a07e6662fe6d74f270c344c13f8c812c3b4fb781b68",
             "GANSpace PCA of testbed-generator's mapping (8 components)"),
    _testbed("testbed-regressor", "regressor.pt", "regressor", 1_133_325,
             "edfce14f81ab9c315112adf7f35019d8b92a35e6d39f193f0ba5be613534956a",
             "attribute regressor (11 attributes, R² 0.88-0.999 held out); measures edits"),
    _testbed("testbed-edit-reference", "edit_reference.pt", "reference", 15_145,
             "7a6c3d83134c0f3eb37f7b8736a9bac6782f1216b86bdfb0ed9babecc81cd83e",
             "each direction's effect on 64 generated samples, read by testbed-regressor "
             "(python -m benchmarks.testbed.edit_reference)"),
]}


def get_spec(name: str) -> CheckpointSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown checkpoint {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def find_by_file(file_name: str) -> Optional[CheckpointSpec]:
    for spec in REGISTRY.values():
        if spec.file == file_name:
            return spec
    return None
