"""The config schema: every section's keys, types, defaults and structural checks, and the config
operations the stages use (a dotted key set on a copy, a section's stage key).

Why no registry here: names (a regulariser, a map source …) are checked by :mod:`paric.catalog`
through the :class:`~paric.config.base.NameCheck` in the validation context, so every plugin may import
this schema and the schema imports none of them (nor torch).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from paric.config.base import KEYED_WHEN_SET, OPTION_SLOTS, ConfigError, NameCheck, _names, _Section
from paric.config.legacy import flat_space, flat_view, from_flat, modern_key
from paric.config.presets import DEFAULT_METHODS, with_r100
from paric.config.space import SAMPLE_KEYS, SearchSpace, _UNSWEPT_TRAIN, space_target
from paric.layout import Layout

class RunConfig(_Section):
    name: str = "default"
    output_dir: str = Field("outputs/default", min_length=1, pattern=r"\S")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch threads per process; 0 = leave torch's default")


class SyntheticConfig(_Section):
    """The embedded Waterbirds-format benchmark (see paric.data.synthetic)."""

    seed: int = 0
    image_size: int = Field(64, ge=16)
    classes: list[str] = ["circle", "triangle"]
    places: list[str] = ["land", "water"]
    shapes: list[str] = ["circle", "square", "triangle", "star"]
    ratio: float = Field(0.95, ge=0.0, le=1.0)
    n_train: int = Field(4000, ge=1)
    n_val: int = Field(800, ge=1)
    n_test: int = Field(800, ge=1)
    n_captions: int = Field(20000, ge=1)
    empty_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    object_area: list[float] = Field([0.05, 0.11], min_length=2, max_length=2,
                                     description="object mask area as a share of the image: uniform [low, high]")
    pattern_contrast: list[float] = Field([0.0, 0.0], min_length=2, max_length=2,
                                          description="contrast of the shape's own internal pattern, per image "
                                          "(0 = a flat colour; a pattern makes shape so easy that converged vanilla "
                                          "training closes the group gap at ratio 0.95, measured)")
    pattern_period: float = Field(6.0, gt=0, description="pattern period in pixels at 64 px")
    place_strength: list[float] = Field([0.7, 1.0], min_length=2, max_length=2,
                                        description="share of the place's texture in the background (the rest a "
                                        "neutral grey), per image: the spurious cue's margin varies")

    @model_validator(mode="after")
    def _classes_are_shapes(self) -> "SyntheticConfig":
        missing = [c for c in self.classes if c not in self.shapes]
        if missing:
            raise ValueError(f"classes {missing} must also be listed in shapes {self.shapes}")
        if len(self.classes) < 2 or len(self.places) < 2:
            raise ValueError("need at least 2 classes and 2 places")
        for key in ("object_area", "pattern_contrast", "place_strength"):
            lo, hi = getattr(self, key)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"{key}={[lo, hi]}: expected 0 <= low <= high <= 1")
        if self.object_area[1] > 0.4:
            raise ValueError(f"object_area={self.object_area}: above 0.4 of the image a rotated shape may not fit")
        return self


class CocoGenderConfig(_Section):
    """COCO apparent gender (paric.data.formats.coco_gender): GALS' caption rule and evaluation split."""

    min_captions: int = Field(3, ge=1, description="captions that must name a gender (or a person) for that label")
    eval_per_class: int = Field(500, ge=1, description="man and woman images each in val and in test (balanced); "
                                "fewer when val2014 has fewer")
    split_dir: str | None = Field(None, description="GALS' COCO_gender folder (biased_split/, balanced_split/): "
                                  "use its image-id lists instead of building the splits here")


#: the dataset format generated here (the embedded benchmark) rather than read from a native directory
GENERATED_FORMAT = "synthetic"


class DataConfig(_Section):
    """Which dataset: the embedded benchmark, or a native dataset directory that the data stage checks
    and indexes into ``<output_dir>/data`` (a Waterbirds-format index pointing at the original images)."""

    format: str = Field("synthetic", description="'synthetic' (the embedded benchmark) or a name in "
                        "paric.data.formats.FORMATS")
    root: str | None = Field(None, description="synthetic: where to generate (default <output_dir>/data); "
                             "other formats: the native dataset directory (required)")
    captions: str | None = Field(None, description="image-caption source for the adapters: .csv (image,caption), "
                                 ".jsonl ({image, caption}) or COCO captions .json; coco_gender defaults to COCO's")
    masks: str | None = Field(None, description="waterbirds: CUB segmentations dir (same relative path, .png)")
    classes: list[str] | None = Field(None, description="food101: class subset (default: GALS' 5 red-meat classes)")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="food101: share of each class's train images "
                                "held out as val")
    seed: int = Field(0, description="seed of the splits built here (food101 val, coco_gender val/test)")
    check_images: Literal["decode", "open", "exists"] = Field(
        "decode", description="how the data stage checks images before indexing: decode fully, read headers, "
        "or only test that the files exist")
    options: dict[str, Any] = Field({}, description="a format's own options (keyword options of its scan), for "
                                    "formats without keys of their own here; unknown ones fail at the data stage")
    coco: CocoGenderConfig = CocoGenderConfig()
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str, info: ValidationInfo) -> str:
        if (names := _names(info)) is not None:
            names.data_format(v)
        return v
    # No cross-key validation here (root required, masks only for waterbirds): overrides are validated
    # one at a time, so 'data.format=food101 data.root=...' must pass after its first item. The data
    # stage (paric.data.formats.options_for) checks them, before any work.

    @property
    def generated(self) -> bool:
        """The embedded benchmark, generated by the data stage (no native directory, no ``FORMATS`` entry)."""
        return self.format == GENERATED_FORMAT


class PretrainConfig(_Section):
    """Contrastive pretraining of a custom (tiny) open_clip model on the caption corpus."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(50, ge=0)
    low_res_epochs: int = Field(0, ge=0, json_schema_extra={KEYED_WHEN_SET: True}, description=(
        "the first this many epochs see the images downsampled by low_res_scale (progressive resizing: a "
        "CNN tower with average pooling takes any size, and a step at half the size costs about a quarter; "
        "measured on the default: cheaper, but its maps localise worse, docs/known-gaps.md)"))
    low_res_scale: float = Field(0.5, gt=0, lt=1, json_schema_extra={KEYED_WHEN_SET: True},
                                 description="the image scale of the low_res_epochs")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", json_schema_extra={KEYED_WHEN_SET: True}, description=(
            "bf16: the towers' forward passes under bfloat16 autocast (weights, optimiser and loss in float32); "
            "about 1.9x faster on a CPU with AVX512_BF16, emulated (slower) without it; paric.precision"))

    @model_validator(mode="after")
    def _low_res_within(self) -> "PretrainConfig":
        if self.low_res_epochs > self.epochs:
            raise ValueError(f"low_res_epochs={self.low_res_epochs} exceeds epochs={self.epochs}")
        return self


class ProlipConfig(_Section):
    """ProLIP's pretraining objective and towers (METHODS.md §4; vlm.family=prolip). Defaults: the paper's."""

    text_unc_from: Literal["auto", "unc", "cls"] = Field(
        "auto", description="the text tower's log σ² from its [UNC] output (the paper) or from the projected "
        "[CLS] (the published code, which its weights need); auto: unc when pretrained here, cls for published "
        "weights")
    inclusion_image_text: float = Field(1e-7, ge=0, description="weight of image ⊂ its caption")
    inclusion_masked: float = Field(1e-3, ge=0, description="weight of original ⊂ masked copy")
    vib: float = Field(1e-4, ge=0, description="weight of KL(N(μ, σ²) ‖ N(0, I))")
    kappa: float = Field(1000.0, gt=0, description="the inclusion loss's temperature")
    masked_fraction: float = Field(0.125, ge=0, le=1, description="share of each batch that gets masked copies")
    text_mask: float = Field(0.75, ge=0, lt=1, description="share of a masked caption's tokens replaced")
    image_keep: float = Field(0.75, gt=0, le=1, description="share of a masked image's patches / feature cells kept")

    def unc_from(self, published: bool) -> Literal["unc", "cls"]:
        if self.text_unc_from != "auto":
            return self.text_unc_from
        return "cls" if published else "unc"


class VLMConfig(_Section):
    family: Literal["clip", "prolip"] = Field(
        "clip", description="clip: an open_clip model; prolip: ProLIP's probabilistic towers "
        "(paric/vlm/prolip/configs holds its configs, by the same names as the CLIP ones)")
    name: str = "paric-tiny-cnn16"
    pretrained: str | None = Field(
        None, description="open_clip tag (e.g. 'openai') or checkpoint path; None pretrains a custom model here"
    )
    pretrain: PretrainConfig = PretrainConfig()
    prolip: ProlipConfig = ProlipConfig()
    prompts: list[str] = ["a photo of a shape", "an image of a shape"]
    class_template: str = "a photo of a {}"
    saliency_layer: str = Field("auto", description="module path inside the visual tower, or 'auto'")

    @model_validator(mode="after")
    def _has_prompts(self) -> "VLMConfig":
        if not self.prompts:
            raise ValueError("prompts must not be empty")
        if "{}" not in self.class_template:
            raise ValueError("class_template must contain '{}'")
        if self.family == "prolip" and self.pretrain.precision != "fp32":
            raise ValueError(f"pretrain.precision={self.pretrain.precision}: ProLIP's pretraining (its variances "
                             "and losses) runs in fp32 only")
        return self


class AdapterConfig(_Section):
    """ProbVLM adapters (METHODS.md §2)."""

    hidden: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    lambda_nll: float = Field(1.0, ge=0)
    lambda_cross: float = Field(1e-4, ge=0)
    cross_l1: bool = Field(False, description="the cross-modal term is L1 + NLL (ProbVLM's public script) instead of "
                           "the NLL alone; the published set: lr 1e-4, lambda_nll 0.05, cross_l1 true "
                           "(benchmarks/adapter_defaults.py measures it against ours)")
    alpha_range: list[float] = Field([1e-4, 5.0], min_length=2, max_length=2)
    beta_range: list[float] = Field([0.1, 5.0], min_length=2, max_length=2)

    @field_validator("alpha_range", "beta_range")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] < v[1]:
            raise ValueError(f"expected [low, high] with 0 < low < high, got {v}")
        return v


class MapsConfig(_Section):
    """Reference-map precompute: deterministic GALS map + K sampled PARIC maps per image."""

    sources: list[str] = Field(["gals", "paric", "lazsl"], min_length=1,
                               description="map sources the store holds (paric.attention.sources.MAP_SOURCES)")
    K: int = Field(32, ge=1)
    seed: int = 0
    gamma: Literal["rejection", "inverse"] = Field(
        "rejection", description="how a GGD sample's gamma variate is drawn from its keyed uniforms: "
        "'rejection' (Marsaglia–Tsang in torch) or 'inverse' (scipy's gammaincinv, the samples before issue "
        "31; K = 32 maps cost 1.8–2.6× one map with it, 1.4–1.7× with 'rejection'); both exact in "
        "distribution, the seed gives different samples")
    batch_size: int = Field(64, ge=1)
    shard_size: int = Field(256, ge=1, description="images per Parquet part; the unit of resume")
    num_actors: int = Field(2, ge=1)
    splits: list[Literal["train", "val", "test"]] = Field(["train", "val", "test"], min_length=1)

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if (names := _names(info)) is not None:
            names.map_sources(v)
        if len(set(v)) != len(v):
            raise ValueError(f"a map source is listed twice: {v}")
        return v


class LazslSection(_Section):
    """LaZSL (METHODS.md §5): the zero-shot classifier and the ``lazsl`` map source. Published at 224 px
    with 90 crops; the embedded 64 px benchmark uses 30 (90 measured no better, README)."""

    descriptors: str | None = Field(
        None, description="DCLIP / CuPL descriptor JSON ({class: [descriptor, ...]}); null: the embedded "
        "benchmark's shape descriptors (paric.data.descriptors.SHAPE_DESCRIPTORS). A class without any falls "
        "back to its class prompt and is reported")
    crops: int = Field(30, ge=1, description="random square crops per image beside the global view")
    scale: list[float] = Field([0.6, 0.9], min_length=2, max_length=2,
                               description="crop side as a share of min(H, W): uniform [low, high]")
    alpha: float = Field(0.8, ge=0, le=1, description="fused similarity (1 − α)⟨g, t⟩ + α⟨r, t⟩")
    eps: float = Field(0.1, gt=0, description="entropic regularisation of the transport")
    iters: int = Field(100, ge=1, description="Sinkhorn iterations at most")
    tol: float = Field(1e-2, gt=0, description="Sinkhorn stops per problem when its marginal error is below")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError(f"expected [low, high] with 0 < low <= high <= 1, got {v}")
        return v

    @field_validator("descriptors")
    @classmethod
    def _readable(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and (names := _names(info)) is not None:
            names.descriptors(v)  # a missing or malformed file fails at load time, naming the file and key
        return v


class BackbonePretrainConfig(_Section):
    """Supervised pretraining of the classifier backbone on the balanced caption corpus.

    Why: GALS fine-tunes an ImageNet-pretrained ResNet; the embedded benchmark has no ImageNet,
    so its stand-in is a backbone trained here on images whose object and place are independent
    (labels: shape incl. 'none', and place), never on the spuriously correlated train split.
    """

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    exclude_classes: bool = Field(
        True, description="leave out corpus images of the benchmark's classes, so the backbone never saw them "
        "(as ImageNet has no landbird/waterbird classes)")
    place_labels: bool = Field(
        False, description="train on the place labels beside the shape labels (as ImageNet features describe "
        "backgrounds too); False: shape labels only")


class ClassifierConfig(_Section):
    arch: Literal["small_resnet", "resnet18", "resnet50"] = "small_resnet"
    weights: Literal["none", "imagenet", "corpus"] = Field(
        "corpus", description="init: random, torchvision ImageNet weights, or pretrained here on the caption corpus"
    )
    # ge=8: narrower first stages crash torch 2.14.1's oneDNN convolution backward on channels-last input
    # (our NHWC batches, permuted) in one thread with a heap corruption (AMD EPYC; measured widths 4-7)
    width: int = Field(16, ge=8, description="small_resnet: channels of the first stage (at least 8)")
    image_size: int = Field(64, ge=16, description="classifier input size; images and maps are resized to it")
    pretrain: BackbonePretrainConfig = BackbonePretrainConfig()


class MethodConfig(_Section):
    """One training method: a loss weighting, an attention regulariser and its reference map."""

    regularizer: str = Field("none", description="a name in paric.regularizers.REGULARIZERS")
    options: dict[str, Any] = Field(
        {}, description="the regulariser's own options, checked against its Options model (docs/reference/"
        "registries.md; gradient_outside: target, norm; gradcam: mode, norm; background_swap: loss; lico: w_mm …)")
    weight: float = Field(0.0, ge=0, description="λ of the attention term")
    reference: str = Field("none", description="'none' or a name in paric.regularizers.reference.REFERENCES")
    k: int | None = Field(None, ge=1, description="use the first k of the K stored samples; None = all")
    dilate: int = Field(0, ge=0, description="grow the reference by this many input pixels (max-pool) so that "
                        "an object's boundary, where its edges' gradients fall, counts as inside")
    renormalise: bool = Field(True, description="divide the upsampled reference by its peak, as GALS does "
                              "(bilinear upsampling of an 8×8 map lowers its peak to ~0.9)")
    reference_floor: float = Field(0.0, ge=0, lt=1, description="map references: A ← clip((A − f)/(1 − f), 0, 1) "
                                   "after renormalising, so only the map's core counts as the object")
    mask_resize: Literal["nearest", "any"] = Field(
        "nearest", description="oracle masks at the classifier's size: nearest, or GALS' bilinear resize in which "
        "any object coverage counts as object")
    uncertainty: Literal["none", "inverse_std"] = Field(
        "none", description="down-weight pixels whose reference is uncertain (sample std across the k maps)"
    )
    uncertainty_scale: float = Field(0.1, gt=0, description="w = 1 / (1 + std / scale)")
    balance: Literal["none", "class", "group"] = Field("none", description="upweight: inverse-frequency CE weights")
    lr: float | None = Field(None, gt=0, description="overrides train.lr for this method")
    weight_decay: float | None = Field(None, ge=0, description="overrides train.weight_decay for this method "
                                       "(group_dro_l2: Sagawa et al.'s strong ℓ2)")
    train_groups: Literal["all", "majority"] = Field(
        "all", description="train rows: all, or each class's majority group only (the spurious cue then predicts "
        "the label perfectly, Waterbirds-100's setting, from the same images and maps); '<method>_r100' presets")
    objective: str = Field("erm", description="the classification loss: a name in paric.train.objectives.OBJECTIVES "
                           "(erm: mean CE; group_dro: Sagawa et al.'s online group weights)")
    objective_options: dict[str, Any] = Field(
        {}, description="the objective's own options, checked against its Options model (group_dro: eta, adjust)")
    sampling: Literal["uniform", "group_balanced"] = Field(
        "uniform", description="how an epoch draws its training rows: a permutation, or n draws with replacement "
        "at probability ∝ 1/n_g, so each group is equally likely (Sagawa et al.'s --reweight_groups, on for "
        "group_dro as in every command of their repository; uses group labels)")
    posthoc: str = Field(
        "none", description="'none' (the method trains), or a name in paric.train.posthoc.POSTHOC: no training, the "
        "model of method 'base' changed after training (dfr: its last layer retrained on group-balanced validation "
        "data, Kirichenko et al.)")
    base: str | None = Field(None, description="posthoc: the trained method whose model (same seed) it starts from")
    posthoc_options: dict[str, Any] = Field(
        {}, description="the post-hoc method's own options, checked against its Options model (dfr: c, subsamples)")
    two_stage: str = Field(
        "none", description="'none', or a name in paric.train.two_stage.TWO_STAGE: a first training run chooses "
        "the second run's training set (jtt: Liu et al.'s error set, upsampled); plain loop only")
    two_stage_options: dict[str, Any] = Field(
        {}, description="the two-stage method's own options, checked against its Options model (jtt: epochs, up)")
    selection: Literal["auto", "balanced", "worst_group"] = Field(
        "auto", description="best epoch (and sweep objective): class-balanced validation accuracy (no group "
        "labels, GALS), or worst-group validation accuracy (as the group-robustness papers); auto: worst-group "
        "exactly when the method uses group labels otherwise")

    @model_validator(mode="before")
    @classmethod
    def _flat_keys(cls, data: Any) -> Any:
        """The plugin keys this model had before issue 29 (``swap_loss: ce``) load into their plugin's
        options (``options: {loss: ce}``), with a DeprecationWarning (:mod:`paric.config.legacy`)."""
        return from_flat(data, cls.selector_defaults()) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _registered(self, info: ValidationInfo) -> "MethodConfig":
        """Structure here; names and every plugin's options (normalised to its Options model, so an
        omitted option and its default give one key) by the name checker, when there is one."""
        if self.posthoc != "none" and self.base is None:
            raise ValueError(f"posthoc: '{self.posthoc}' needs base (the trained method it starts from)")
        if (names := _names(info)) is not None:
            for slot, opts in names.method_options(self).items():
                object.__setattr__(self, slot, opts)
        return self

    @classmethod
    def selector_defaults(cls) -> dict[str, Any]:
        """The plugin-choosing fields' defaults (``regularizer: none`` …)."""
        return {name: cls.model_fields[name].default for name in OPTION_SLOTS}


def _merge_method(preset: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` over ``preset``, key by key; a plugin's options merge option by option while the method
    keeps the preset's plugin, and are the preset's no more once ``spec`` names another plugin."""
    out = {**preset, **spec}
    defaults = MethodConfig.selector_defaults()
    for selector, slot in OPTION_SLOTS.items():
        same = preset.get(selector, defaults[selector]) == out.get(selector, defaults[selector])
        if not same and slot not in spec:
            out.pop(slot, None)
        elif same and isinstance(preset.get(slot), dict) and isinstance(spec.get(slot), dict):
            out[slot] = {**preset[slot], **spec[slot]}
    return out


class TrainConfig(_Section):
    """Fine-tuning the classifier with a method (plain PyTorch loop, scaled by Ray Train)."""

    method: str = "vanilla"
    methods: dict[str, MethodConfig] = Field(default_factory=lambda: {
        k: MethodConfig(**v) for k, v in with_r100(DEFAULT_METHODS).items()})
    compare: list[str] = ["vanilla", "upweight", "gals", "paric_mean", "paric_median", "oracle_mask"]
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    epochs: int = Field(5, ge=1, description="the most epochs a run trains (the cosine schedule spans them)")
    patience: int | None = Field(
        None, ge=1, description="early stopping: end a run after this many epochs without a new best class-"
        "balanced validation accuracy (None: always train `epochs`). A run that stops this way has converged "
        "by the selection criterion; one that reaches `epochs` with its best at the end has not")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    head_lr: float | None = Field(None, gt=0, description="learning rate of the final layer; None = lr")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(0.5, ge=0)
    flip: bool = Field(True, description="random horizontal flip of image, map and mask together")
    reader: Literal["ray_data", "memory"] = "ray_data"
    num_workers: int = Field(1, ge=0, description="Ray Train workers of each final run and sweep trial; 0 = the "
                             "plain loop, a final run in this process or a one-CPU Ray task, a trial in its "
                             "Tune actor")
    use_gpu: bool | None = Field(None, description="None: use GPUs when the cluster has them")
    max_failures: int = Field(2, ge=0)
    max_concurrent: int = Field(2, ge=1, description="(method, seed) runs at once on Ray Train; each worker "
                                "holds one CPU (or GPU), so 2 fills a 2-core laptop")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", json_schema_extra={KEYED_WHEN_SET: True}, description=(
            "bf16: the classifier's training forward passes under bfloat16 autocast (weights, optimiser, loss, "
            "regulariser and evaluation in float32), for methods whose regulariser reads neither features nor "
            "input gradients; about 1.4x faster on a CPU with AVX512_BF16; paric.precision"))

    @model_validator(mode="before")
    @classmethod
    def _merge_methods(cls, data: Any) -> Any:
        """A config names only what it changes: ``methods.gals.weight=5`` keeps the other defaults, and
        ``methods.gals_exact.options.norm=l2`` the preset's other options (:func:`_merge_method`)."""
        if (isinstance(data, dict) and isinstance(data.get("methods"), dict)
                and not all(isinstance(v, MethodConfig) for v in data["methods"].values())):  # validated already
            merged = {k: dict(v) for k, v in DEFAULT_METHODS.items()}
            given = set()
            for name, spec in data["methods"].items():
                if isinstance(spec, MethodConfig):
                    spec = spec.model_dump()
                merged[name] = _merge_method(merged.get(name, {}), spec or {}) if isinstance(spec, dict) else spec
                if isinstance(merged[name], dict):  # old flat keys, named with their method
                    merged[name] = from_flat(merged[name], MethodConfig.selector_defaults(), f"train.methods.{name}.")
                given.add(name)
            data = {**data, "methods": with_r100(merged, given)}
        return data

    def _key_form(self, dump: dict[str, Any], cfg: "Config") -> dict[str, Any]:
        """The methods in their pre-issue-29 flat form, so the section's key is what it was
        (:func:`paric.config.legacy.flat_view`)."""
        return {**dump, "methods": {name: flat_view(m, keep_defaults=True) for name, m in self.methods.items()}}

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> "TrainConfig":
        names = _names(info)
        for m in [self.method, *self.compare]:
            if m not in self.methods:
                raise ValueError(f"method '{m}' is not defined in train.methods ({sorted(self.methods)})")
            if names is not None:
                names.method_in_use(m, self.methods[m])
        return self


class EvalConfig(_Section):
    ece_bins: int = Field(15, ge=1)
    fgsm_eps: list[Annotated[float, Field(ge=0)]] = Field([2 / 255, 8 / 255], description="L∞ budgets in [0,1] "
                                                          "pixel units")
    pgd_eps: list[Annotated[float, Field(ge=0)]] = [2 / 255]
    pgd_steps: int = Field(10, ge=1)
    adv_max_images: int = Field(400, ge=0, description="robust accuracy on the first n test images (0 = skip)")
    faith_max_images: int = Field(200, ge=0, description="insertion / deletion AUC of the classifier's Grad-CAM "
                                  "on the first n test images (0 = skip)")
    faith_steps: int = Field(16, ge=1, description="points of the insertion / deletion curves (beside the start)")
    faith_blur: float = Field(5 / 224, gt=0, description="insertion's Gaussian blur σ as a share of the image side "
                              "(RISE's σ = 5 px at 224 px; kernel 2⌊σ⌋ + 1, at least 3; before issue 28: 0.1)")


class SweepConfig(_Section):
    """Ray Tune + OptunaSearch over each method's space; objective: class-balanced val accuracy."""

    methods: list[str] = ["gals", "paric_mean"]
    num_samples: int = Field(6, ge=1)
    max_concurrent: int = Field(2, ge=1, description="trials at once (each holds train.num_workers CPUs/GPUs)")
    asha: bool = Field(True, description="stop weak trials early (ASHA on val_balanced_acc per epoch)")
    grace_period: int = Field(2, ge=1)
    reduction_factor: int = Field(4, ge=2, description="ASHA keeps the top 1/reduction_factor of trials at each rung")
    max_failures: int = Field(0, ge=0, description="retries of a crashed trial; it is then recorded as failed")
    seeds: list[int] = Field(
        default_factory=list, description="training seeds each configuration of a grid space is trained with; it "
        "is scored by their mean (empty: run.seed alone). A trial per (configuration, seed)")
    spaces: dict[str, SearchSpace] = Field(default_factory=lambda: {
        "gals": SearchSpace({"weight": {"dist": "log_uniform", "low": 0.1, "high": 10.0},
                             "lr": {"dist": "log_uniform", "low": 0.003, "high": 0.03}}),
        "paric_mean": SearchSpace({"weight": {"dist": "log_uniform", "low": 0.1, "high": 10.0},
                                   "k": {"dist": "int", "low": 4, "high": 32},
                                   "reference": {"dist": "categorical", "choices": ["mean", "median"]},
                                   "uncertainty": {"dist": "categorical", "choices": ["none", "inverse_std"]},
                                   "lr": {"dist": "log_uniform", "low": 0.003, "high": 0.03}}),
    })

    def space_key_form(self, method: str, methods: dict[str, MethodConfig]) -> dict[str, Any]:
        """A method's space as sweep keys read it: dimensions named as before issue 29 (``dro_eta``, not
        ``objective_options.eta``), so sweeps cached before it stay cached."""
        return flat_space(self.spaces[method].model_dump(mode="json"), methods.get(method))

    def _key_form(self, dump: dict[str, Any], cfg: "Config") -> dict[str, Any]:
        return {**dump, "spaces": {name: self.space_key_form(name, cfg.train.methods) for name in self.spaces}}


class ReportConfig(_Section):
    """What the report's map figure compares: the classifier's Grad-CAM of ``before`` vs ``after``."""

    before: str = "vanilla"
    after: str = "paric_mean"
    examples_per_group: int = Field(1, ge=1, description="test images per group in the map figure")
    differences: list[list[str]] = Field(
        [["paric_mean", "gals"], ["paric_median", "gals"], ["paric_mean_unc", "gals"], ["paric_prolip", "gals"],
         ["paric_norm_mean", "gals"], ["paric_norm_median", "gals"], ["paric_norm_unc", "gals"],
         ["paric_norm_mean", "paric_mean"]],
        description="pairs (a, b) whose paired per-seed difference a − b the report gives with its CI (besides "
        "every method − before); pairs with a method this config does not train are left out")
    families: list[str] = Field(
        [], description="pipelines/families.py: the VLM families (vlm.family values) to run this config under, "
        "each into <output_dir>/<family>, and compare in one report (families.md)")

    @field_validator("differences")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        for pair in v:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"each pair is [a, b] of two different methods, got {pair}")
        return v

    @field_validator("families")
    @classmethod
    def _known_families(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if (names := _names(info)) is not None:
            names.vlm_families(v)
        return v


class Config(_Section):
    # factories, not instances: every config gets its own sections
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    vlm: VLMConfig = Field(default_factory=VLMConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    maps: MapsConfig = Field(default_factory=MapsConfig)
    lazsl: LazslSection = Field(default_factory=LazslSection)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _k_within_K(self, info: ValidationInfo) -> "Config":
        for name, m in self.train.methods.items():
            if m.k is not None and m.k > self.maps.K:
                raise ValueError(f"train.methods.{name}.k={m.k} exceeds maps.K={self.maps.K} (samples stored)")
        for name, space in self.sweep.spaces.items():
            self._check_space(name, space, _names(info))
            if name in self.sweep.methods:
                self.check_sweep_seeds(name)
        if len(set(self.sweep.seeds)) != len(self.sweep.seeds):
            raise ValueError(f"sweep.seeds={self.sweep.seeds}: each seed once")
        return self

    def check_sweep_seeds(self, method: str) -> None:
        """With several ``sweep.seeds``, the method's space must be a grid, so each configuration is trained
        with every seed (a sampler would treat the seed as one more dimension to search)."""
        if len(self.sweep.seeds) > 1 and not self.sweep.spaces[method].is_grid:
            raise ValueError(f"sweep.seeds={self.sweep.seeds}: sweep.spaces.{method} must be a grid (every dimension "
                             "'dist: grid') so that each configuration is trained with every seed")

    def _check_space(self, method: str, space: SearchSpace, names: NameCheck | None = None) -> None:
        """Every dimension names a key a trial can set, and its values are valid there (set on a
        copy of this config, as a trial will, and with a name checker its names too); sample-count
        keys need a sampled reference."""
        if method not in self.train.methods:
            return  # a space of a method this config does not define is unused (pipeline checks sweep.methods)
        refs = space.choices("reference") or [self.method(method).reference]
        sampled = names is None or any(r != "none" and names.sampled_reference(r) for r in refs)
        for key, dim in space.items():
            where = f"sweep.spaces.{method}.{key}"
            head = key.split(".")
            if head[0] == "train" and (len(head) != 2 or head[1] in _UNSWEPT_TRAIN):
                raise ValueError(f"{where}: a sweep sets train.<setting> (not {sorted(_UNSWEPT_TRAIN)})")
            if key in SAMPLE_KEYS and not sampled:
                raise ValueError(f"{where}: method '{method}' uses reference {refs}, which reads no stored samples")
            values = dim.values()
            if key == "k":
                if values[0] > self.maps.K:
                    raise ValueError(f"{where}={values} starts above maps.K={self.maps.K}: a sweep reads stored "
                                     "samples only")
                values = [min(v, self.maps.K) for v in values]
            for value in values:
                try:
                    trial = with_value(self, space_target(method, key), value)
                    if names is not None:
                        names.method_options(trial.method(method))
                        names.method_in_use(method, trial.method(method))
                except (ConfigError, ValidationError, ValueError) as exc:
                    raise ValueError(f"{where}: value {value!r} is not valid there: {_first_error(exc)}") from None

    def method(self, name: str | None = None) -> MethodConfig:
        return self.train.methods[name or self.train.method]

    def output_path(self, *parts: str) -> Path:
        """Absolute path under ``run.output_dir``."""
        return Path(self.run.output_dir).expanduser().resolve().joinpath(*parts)

    @property
    def layout(self) -> Layout:
        """Where each stage writes under ``run.output_dir`` (:mod:`paric.layout`)."""
        return Layout(self.output_path())

    def data_root(self) -> Path:
        """The canonical dataset every stage reads: the synthetic benchmark, or the data stage's index."""
        if self.data.generated and self.data.root:
            return Path(self.data.root).expanduser().resolve()
        return self.output_path("data")

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some config sections: the cache key of a stage."""
        blob = json.dumps({s: _dump(self, s) for s in sections if not _unset(self, s)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def with_value(cfg: Config, dotted: str, value: Any) -> Config:
    """A copy of ``cfg`` with one dotted key set, validated by the model that owns it (a sweep
    trial's values). The sections above it are copied, not revalidated."""
    return _assign(cfg, dotted.split("."), value, dotted)


def _assign(node: Any, path: list[str], value: Any, dotted: str) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(node, MethodConfig) and head not in type(node).model_fields:
        key = ".".join(path)  # an old flat key: its plugin's option
        path = modern_key(key, dotted.removesuffix(key)).split(".")
        head, rest = path[0], path[1:]
    if isinstance(node, BaseModel):
        if head not in type(node).model_fields:
            raise ConfigError(f"{dotted}: no key '{head}' in {type(node).__name__}")
        child = getattr(node, head)
        new_child = _assign(child, rest, value, dotted) if rest else value
        if isinstance(child, BaseModel):
            return node.model_copy(update={head: new_child})
        copy = node.model_copy()
        setattr(copy, head, new_child)  # validate_assignment: the owning model checks the value
        return copy
    if isinstance(node, dict):
        if rest and head not in node:
            raise ConfigError(f"{dotted}: no key '{head}'")
        return {**node, head: _assign(node[head], rest, value, dotted) if rest else value}
    raise ConfigError(f"{dotted}: '{head}' is inside a value, not a section")


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        return f"{loc + ': ' if loc else ''}{e['msg']}"
    return str(exc)


def _key_dump(obj: Any, cfg: Config) -> Any:
    """A section as its stage key sees it: ``model_dump``, less the :data:`KEYED_WHEN_SET` fields
    that hold their default; a section with a ``_key_form`` (the methods, the sweep spaces) adjusts
    its dump there."""
    if not isinstance(obj, BaseModel):
        return obj
    out = {}
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get(KEYED_WHEN_SET) and value == field.default:
            continue
        out[name] = (_key_dump(value, cfg) if isinstance(value, BaseModel)
                     else obj.model_dump(mode="json", include={name})[name])
    form = getattr(obj, "_key_form", None)
    return form(out, cfg) if form is not None else out


def _unset(cfg: Config, dotted: str) -> bool:
    """Whether ``dotted`` is a :data:`KEYED_WHEN_SET` leaf holding its default: left out of a stage key
    that names it, so adding such an option keeps every existing key."""
    *parents, leaf = dotted.split(".")
    obj: Any = cfg
    for part in parents:
        obj = getattr(obj, part)
    field = type(obj).model_fields.get(leaf) if isinstance(obj, BaseModel) else None
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    return bool(extra.get(KEYED_WHEN_SET)) and getattr(obj, leaf) == field.default


def _dump(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return _key_dump(obj, cfg)
