"""Pydantic models for every knob in params.yaml, one class per section.

Each section mirrors a pipeline stage (align -> encode -> tune -> edit -> evaluate, the
names of gani.stages.layout.STAGES and dvc.yaml), plus `models` (which checkpoints),
`tracking` (MLflow) and `orchestration` (Prefect). Unknown keys are errors, so a typo in
params.yaml or `--set` never passes silently; keys that were removed or renamed are named in
`REMOVED_KEYS` with what replaces them.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator,
                      model_validator)

from gani.redact import uri_credentials

Domain = Literal["ffhq", "afhq_wild", "cars", "church", "horse", "demo"]
DOMAINS: tuple[str, ...] = ("ffhq", "afhq_wild", "cars", "church", "horse", "demo")


# Keys that params.yaml or `--set` may still carry from earlier versions -> what to write now.
REMOVED_KEYS: dict[str, str] = {
    "tune.pti.steps": "tune.pti.steps was removed: tune.steps is the step count of every "
                      "method",
    "tune.projection.steps": "tune.projection.steps was removed: tune.steps is the step count "
                             "of every method (encode.projection_steps is the encode stage's)",
    "metrics": "the metrics section was renamed evaluate, after the stage it configures: "
               "write evaluate.size, evaluate.locality_n, evaluate.locality_seed",
}


def _float_text(value):
    """YAML 1.1 reads `1e-3` (no dot) as a string: take a string that is a number as that
    number (an infinite or NaN one is then refused like any other)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


# Every number of the settings is one of these (tests/foundation/test_config_values.py walks
# the schema and checks it): strict, so an int is a real int (not `true`, not 3.0, not "3")
# and a float a real number (an int or a number written as text, `1e-3`, is fine; not
# `true`), and every float finite
# (no .inf / .nan: the model-wide `allow_inf_nan=False`).
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(lambda v: _float_text(v)), Strict()]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]


def _check_template(template: str, names: tuple[str, ...]) -> None:
    """A `str.format` template may use only `{name}` fields of `names`."""
    try:
        template.format(**{n: "x" for n in names})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"a template with fields {', '.join('{%s}' % n for n in names)} "
                         f"only ({type(exc).__name__}: {exc})") from None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _no_credentials(self):
        """No setting holds a URI with credentials (gani/redact.py: user info, a secret
        query or fragment parameter): settings are logged and params.yaml is in git."""
        for name, value in self:
            for text in (value if isinstance(value, list) else [value]):
                found = uri_credentials(text) if isinstance(text, str) else None
                if found:
                    raise ValueError(
                        f"{name}: a URI with credentials ({found}) is refused: settings are "
                        f"logged; pass credentials through the environment (AWS_*, "
                        f"MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD / "
                        f"MLFLOW_TRACKING_TOKEN, PGPASSWORD or ~/.pgpass)")
        return self


class GeneratorSpec(Section):
    """Which StyleGAN2 generator; `checkpoint: demo` builds a seeded random one of this shape.
    The defaults are params.yaml's base values (FFHQ config-f): an explicit base value is
    one that differs from them (gani/config/loader.py)."""

    checkpoint: str = "stylegan2-ffhq-config-f"
    size: Int = Field(1024, ge=32, le=1024)
    style_dim: Int = Field(512, ge=8)
    n_mlp: Int = Field(8, ge=1)
    channel_multiplier: Int = Field(2, ge=1)
    channel_max: Int = Field(512, ge=8)
    seed: Seed = 0

    @field_validator("size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        if size & (size - 1):
            raise ValueError("must be a power of two (32, 64, 128, 256, 512 or 1024)")
        return size


class EncoderSpec(Section):
    """The e4e encoder; `demo` builds a seeded random, narrow encoder of the same architecture."""

    checkpoint: str = "e4e_ffhq_encode"
    width_div: Int = Field(1, ge=1, description="divides the IR-SE body widths; 1 = official")
    seed: Seed = 1


class ModelsSection(Section):
    generator: GeneratorSpec = GeneratorSpec()
    encoder: EncoderSpec = EncoderSpec()
    id_net: Optional[str] = Field(None, description="curricularface | arcface | moco | null")
    parser: Optional[str] = Field(None, description="maskgan parser checkpoint name or null")
    lpips_backbone: Optional[str] = Field(None, description="alexnet checkpoint name or null")


class AlignSection(Section):
    method: Literal["ffhq", "resize"] = "ffhq"
    detector: Literal["dlib", "sidecar"] = "dlib"
    multi_face: Literal["largest", "quarantine"] = "largest"
    output_size: Int = Field(256, ge=32, le=4096)
    transform_size: Int = Field(256, ge=32, le=8192)
    height: Int = Field(256, ge=16, description="resize target height (method=resize)")
    width: Int = Field(256, ge=16, description="resize target width (method=resize)")
    min_side: Int = Field(32, ge=1)
    max_pixels: Int = Field(100_000_000, ge=1024)
    max_bytes: Int = Field(256 * 2**20, ge=1024,
                           description="larger files are quarantined too_large unread")
    max_decode_bytes: Int = Field(
        384 * 2**20, ge=2**20,
        description="decoded size (width x height x bands x bytes per sample, from the "
                    "header) above which a file is quarantined too_large undecoded")
    prealigned_max_side: Int = Field(
        0, ge=0, description="images whose longer side is at most this many pixels are "
        "already-aligned crops (the testbed's procedural faces): resized to output_size, "
        "no landmarks; 0 = off")


class EncodeSection(Section):
    """The start latent. The projection knobs are the encode stage's own (used when there is
    no encoder or `method` is a projection); they are not the tuner's `tune.steps`."""

    method: Literal["e4e", "w_projection", "wplus_projection"] = "e4e"
    projection_steps: Int = Field(200, ge=1, description="projector steps of the encode stage")
    projection_lr: Float = Field(0.1, gt=0, description="projector lr of the encode stage")


class LossWeights(Section):
    """Paper Eq. 1 weights; a term with weight 0 or no network is skipped."""

    rec: Literal["l2", "smooth_l1"] = "l2"
    lambda_rec: Float = Field(1.0, ge=0)
    lambda_lpips: Float = Field(0.8, ge=0)
    lambda_id: Float = Field(0.1, ge=0)
    lambda_parse: Float = Field(1.0, ge=0)


class RegularizerSection(Section):
    """Paper Eq. 5 localization regularizer on random W latents."""

    lambda_r: Float = Field(0.2, ge=0)
    lambda_rec: Float = Field(1.0, ge=0)
    lambda_lpips: Float = Field(0.8, ge=0)
    n_latents: Int = Field(1, ge=1, description="random w_r per step")


class GMMSection(Section):
    """Gradient Modification Modules; reasoning in docs/method.md."""

    blocks: Int = Field(2, ge=1, le=16)
    pre_norm: Literal["none", "sn", "in"] = "in"
    post_norm: Literal["none", "sn", "in"] = "sn"
    init_scale: Float = Field(0.1, ge=0)
    zero_init_last: bool = True
    identity_path: bool = False
    bias: Literal["zero", "uniform"] = "zero"
    gradient_source: Literal["original", "current"] = Field(
        "original", description="reading reparam: original: g at θ once (paper); current: g "
        "at the tuned weights every step, corrections accumulated")
    row_scale: Literal["none", "grad_norm"] = Field(
        "none", description="reading reparam: grad_norm scales each correction row by its "
        "gradient row's norm / the layer mean (our variant; keeps untouched rows still)")
    reading: Literal["reparam", "optimizer"] = Field(
        "optimizer", description="optimizer: M_φ(g_t) = g_t + ‖g_row‖·branch_φ(IN(g_t)) "
        "replaces the gradient in PTI's Adam on the weight deltas (tune.pti's lr), φ trained "
        "by the look-ahead hypergradient; reparam: θ' = θ − M_φ(g), only φ trained (paper "
        "Eq. 2). Default optimizer: it dominates every reparam rate and sharing tried "
        "(docs/method.md §9.5 item 6)")
    sharing: Literal["channels", "layer", "channels_affine"] = Field(
        "channels", description="channels: one module per channel count (paper); layer: one "
        "per modulated conv; channels_affine: per C plus a learned per-layer gain and offset")
    lookahead: Int = Field(1, ge=0, le=64, description="reading optimizer: steps per φ update "
                           "(the hypergradient unrolls that many Adam steps); 0 = φ frozen")


class OptimizerSection(Section):
    name: Literal["adam", "ranger"] = "adam"
    lr: Float = Field(4e-6, gt=0, description="with lr_scaling fan_in: a C = 512 module's rate")
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (
        0.95, 0.999)
    lookahead_k: Int = Field(6, ge=1)
    lookahead_alpha: Float = Field(0.5, gt=0, le=1)
    gc: bool = True
    warmup_steps: Int = Field(0, ge=0, description="linear lr warm-up steps (Ranger)")
    degenerate_to_sgd: bool = Field(
        True, description="Ranger: take RAdam's un-normalised SGD steps while ρ_t ≤ 5 "
        "(reference behaviour); false = no update in those first steps")
    eps: Optional[Float] = Field(None, gt=0, description="null = Adam 1e-8 / Ranger 1e-5")
    lr_scaling: Literal["none", "fan_in"] = Field(
        "fan_in", description="fan_in: module M_C gets lr·512/C (equal output step per C)")


class PTISection(Section):
    """PTI's own knobs; its step count is `tune.steps`."""

    lr: Float = Field(3e-4, gt=0)
    locality: bool = True


class ProjectionSection(Section):
    """The StyleGAN2 projector (rosinality projector.py) as a tuner: W or W+ from w_init.
    Its step count is `tune.steps`."""

    lr: Float = Field(0.1, gt=0)
    lr_rampup: Float = Field(0.05, ge=0, le=1)
    lr_rampdown: Float = Field(0.25, ge=0, le=1)
    latent_noise: Float = Field(0.05, ge=0, description="× latent std, ramped down")
    noise_ramp: Float = Field(0.75, gt=0, le=1)
    noise_regularize: Float = Field(1e5, ge=0)
    optimize_noise: bool = True
    noise_init: Literal["const", "random"] = Field(
        "const", description="const: start from G's stored noise (the e4e image); random: "
        "fresh N(0,1) as the reference projector")
    n_mean_latent: Int = Field(10000, ge=16)


class TuneSection(Section):
    method: Literal["gani", "pti", "wplus_projection", "w_projection", "e4e"] = Field(
        "pti", description="pti: the best at equal steps in our judgement (docs/method.md "
        "§9.5); gani: the paper's method as we read it, experimental")
    steps: Int = Field(300, ge=0, description="optimisation steps of whichever method runs "
                       "(e4e runs none: its results record 0)")
    batch_size: Int = Field(1, ge=1)
    seed: Seed = 0
    log_every: Int = Field(10, ge=1)
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: CUDA autocast")
    loss: LossWeights = LossWeights()
    reg: RegularizerSection = RegularizerSection()
    gmm: GMMSection = GMMSection()
    optimizer: OptimizerSection = OptimizerSection()
    pti: PTISection = PTISection()
    projection: ProjectionSection = ProjectionSection()


class InterFaceGANEdit(Section):
    """A direction from a file (`file`: a [1, D] / [D] tensor) or from a registry
    checkpoint holding {attribute: direction} (`checkpoint`, `key`: the entry, default
    `name`). `unit: sigma` makes the grid's factors multiples of σ_d, the std of generated
    W codes along the direction (comparable across directions); `latent`: raw w + s·d."""

    name: str
    file: Optional[str] = None
    checkpoint: Optional[str] = None
    key: Optional[str] = None
    unit: Literal["latent", "sigma"] = "latent"

    @model_validator(mode="after")
    def _one_source(self) -> "InterFaceGANEdit":
        if (self.file is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of file (a direction file) or checkpoint "
                             "(a registry name of a directions file)")
        return self


class GANSpaceEdit(Section):
    name: str
    component: Int = Field(ge=0)
    start: Int = Field(ge=0)
    end: Int = Field(ge=1)
    strength: Float

    @model_validator(mode="after")
    def _some_layer(self) -> "GANSpaceEdit":
        """`end` is exclusive: an edit with end <= start would touch no layer. The component
        is checked against the PCA's count when the runtime loads it (before any image)."""
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start}): "
                             f"the edit changes layers start..end-1")
        return self


class EditSection(Section):
    interfacegan: list[InterFaceGANEdit] = []
    ganspace_file: Optional[str] = Field(None, description="PCA file; null = compute from G")
    ganspace: list[GANSpaceEdit] = []
    pca_samples: Int = Field(10_000, ge=16)
    factors: list[Float] = Field([-3.0, 0.0, 3.0], min_length=1)
    regressor: Optional[str] = Field(
        None, description="attribute regressor (registry name): measures what each "
        "InterFaceGAN edit does to every attribute of the tuned image and of generated "
        "samples (edits.json, printed under the grid); null = not measured")
    measure_strength: Float = Field(1.5, gt=0, description="the measured edit: ±this·σ_d")
    reference_samples: Int = Field(64, ge=4, description="generated samples the edits' "
                                   "reference effect is measured on (once per process)")
    reference: Optional[str] = Field(
        None, description="the edits' reference effect measured once and stored (registry "
        "name, e.g. testbed-edit-reference); null = measured at start on reference_samples")


class EvaluateSection(Section):
    """The evaluate stage: metric resolution and the locality protocol (docs/method.md)."""

    size: Int = Field(256, ge=16)
    locality_n: Int = Field(8, ge=1)
    locality_seed: Seed = 1234


class TrackingSection(Section):
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "gani-{dataset}-{profile}"
    log_loss_curve: bool = True

    @field_validator("experiment")
    @classmethod
    def _experiment_template(cls, template: str) -> str:
        _check_template(template, ("dataset", "profile"))
        return template

    @field_validator("uri")
    @classmethod
    def _no_password(cls, uri: str) -> str:
        """Settings are logged (MLflow params, Prefect parameters) and params.yaml is in git:
        any credential in the URI (user:password@, TOKEN@, ?access_token=, a signed query)
        would leak, so it is refused (gani/redact.py)."""
        found = uri_credentials(uri)
        if found:
            raise ValueError(
                f"credentials in the URI ({found}) are refused: credentials must not be "
                "in settings (they are logged); set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) for an MLflow server, "
                "PGPASSWORD or ~/.pgpass for a PostgreSQL store")
        return uri


class OrchestrationSection(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_concurrency: Int = Field(4, ge=1)
    gpu_limit: str = "gpu-slots"
    gpu_slots: Int = Field(1, ge=1)
    use_gpu_limit: bool = False
    shard_size: Int = Field(200, ge=1)
    shard_relaunches: Int = Field(
        2, ge=0, le=20, description="times a night relaunches a shard deployment run that "
        "was lost (Crashed: its worker died; Failed) before giving up on its images")
    shard_lost_after: Int = Field(
        600, ge=45, le=86400, description="seconds without a heartbeat after which a shard "
        "run counts as lost (the Prefect automation marks it Crashed); must exceed the "
        "workers' PREFECT_FLOWS_HEARTBEAT_FREQUENCY (default 180)")
    retries: Int = Field(3, ge=0, le=20)
    retry_delay_seconds: Float = Field(5.0, ge=0, le=3600)

    @field_validator("gpu_limit")
    @classmethod
    def _gpu_limit_template(cls, template: str) -> str:
        _check_template(template, ("host", "gpu"))
        if not template.strip():
            raise ValueError("must not be empty")
        return template


class Settings(Section):
    """The fully resolved configuration of one run (base sections + profile + --set)."""

    profile: str = "demo"
    domain: Domain = "demo"
    models: ModelsSection = ModelsSection()
    align: AlignSection = AlignSection()
    encode: EncodeSection = EncodeSection()
    tune: TuneSection = TuneSection()
    edit: EditSection = EditSection()
    evaluate: EvaluateSection = EvaluateSection()
    tracking: TrackingSection = TrackingSection()
    orchestration: OrchestrationSection = OrchestrationSection()
