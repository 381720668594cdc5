"""The stages before the map store: benchmark data, the VLM, and the probabilistic adapters.

Why here and not in paric/vlm: these functions decide *what* to (re)compute from the config and
the cache markers; the algorithms they call know nothing about caching or outputs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from paric import __version__
from paric.config import Config, VLMConfig
from paric.data import CaptionCorpus, WaterbirdsDataset, generate_benchmark
from paric.data.fingerprint import dataset_fingerprint, forget
from paric.data.formats import prepare_index
from paric.io import sha256_file, write_json
from paric.stages.cache import read_marker, timed_stage
from paric.stages.runner import Stage, run_stage
from paric.vlm.adapters import embed_pairs, train_adapters
from paric.vlm.factory import VLM, VLMLoadError, weights_id
from paric.vlm.families import VLM_FAMILIES
from paric.vlm.pretrain import zero_shot_accuracy


def set_threads(cfg: Config) -> None:
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)


def data_stage(cfg: Config, progress: bool = True) -> Path:
    """Generate the embedded benchmark, or check a native dataset (``data.root``) and index it into
    ``<output_dir>/data`` (reused while source and options are unchanged; a failed check raises
    DatasetCheckError listing every problem). Returns the canonical root every later stage reads."""
    root = cfg.data_root()
    with timed_stage("data", root) as info:
        if cfg.data.generated:
            info["skipped"] = (root / "dataset.json").is_file()
            generate_benchmark(cfg.data.synthetic, root, progress=progress)
        else:
            info["skipped"] = prepare_index(cfg.data, root, force=bool(info.get("forced", False)))
    forget(root)
    return root


def stack_images(dataset: WaterbirdsDataset) -> torch.Tensor:
    """(N, H, W, 3) uint8 tensor of a split's images (small images: held in memory)."""
    return torch.from_numpy(np.stack([dataset[i]["image"] for i in range(len(dataset))]))


def load_corpus(root: Path, image_size: int) -> tuple[torch.Tensor, list[str]]:
    """The caption corpus as (N, H, W, 3) uint8 images and their captions."""
    corpus = CaptionCorpus(root, image_size=image_size)
    pairs = [corpus[i] for i in range(len(corpus))]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), [p[1] for p in pairs]


@dataclass
class VLMArtifact:
    """Which VLM the later stages load, and how to name it in provenance. ``key`` is content-derived:
    published weights by their file hash (or tag), a VLM pretrained here by its config and data."""

    name: str
    pretrained: str | None
    checkpoint: Path | None
    key: str
    vlm: VLMConfig = field(default_factory=VLMConfig)  # the family and its options

    def weights(self) -> str:
        """The weights' content id for map provenance (a checkpoint's hash, or the published tag)."""
        if self.checkpoint is not None:
            return f"sha256:{sha256_file(self.checkpoint)[:16]}"
        return weights_id(self.pretrained) if self.pretrained is not None else "random"

    def load(self) -> VLM:
        """Load by this artifact's own name and weights (``vlm`` supplies only the family options, so
        an artifact built without it still loads the model it names)."""
        vcfg = self.vlm.model_copy(update={"name": self.name, "pretrained": self.pretrained})
        return VLM_FAMILIES[self.vlm.family].load(vcfg, self.pretrained, self.checkpoint)


VLM_KEYS = ("vlm.name", "vlm.pretrain", "run.seed")


def vlm_keys(cfg: Config) -> tuple[str, ...]:
    """The vlm stage's config keys: CLIP's, plus the family's own for another family (so the keys of
    CLIP outputs written before families existed stay valid)."""
    return VLM_KEYS + VLM_FAMILIES[cfg.vlm.family].key_fields()
ADAPTER_KEYS = ("adapter", "run.seed")


def vlm_stage_spec(cfg: Config, root: Path) -> Stage:
    """The VLM pretrained here: its config, the seed and the caption corpus' content (published
    weights are keyed by their own content instead, see :class:`VLMArtifact`)."""
    inputs = (dataset_fingerprint(root), *VLM_FAMILIES[cfg.vlm.family].key_inputs())
    return Stage("vlm", cfg.layout.vlm(), vlm_keys(cfg), inputs, outputs=("model.pt",))


def adapter_stage_spec(cfg: Config, root: Path, vlm_art: VLMArtifact) -> Stage:
    """The adapters: their config, the VLM's key and the corpus they fit (the data's, whichever VLM
    embeds it, a published one included)."""
    return Stage("adapters", cfg.layout.adapters(), ADAPTER_KEYS, (vlm_art.key, dataset_fingerprint(root)),
                 outputs=("adapters.pt",))


def vlm_id(cfg: Config) -> str:
    """Which VLM a text-branch regulariser (LICO) trains through, for the training keys: published
    weights by their id, a VLM pretrained here by its stage key (retraining it retrains those runs)."""
    if cfg.vlm.pretrained is not None:
        return published_key(cfg)
    marker = read_marker(cfg.layout.vlm())
    return str(marker.get("key")) if marker else "missing"


def published_key(cfg: Config) -> str:
    """Published weights' key: name and content id (and the family's, for another family)."""
    base = f"{cfg.vlm.name}:{weights_id(cfg.vlm.pretrained)}"
    return VLM_FAMILIES[cfg.vlm.family].published_key(base, cfg)


def vlm_key(cfg: Config, root: Path) -> str:
    return vlm_stage_spec(cfg, root).key(cfg)


def adapter_key(cfg: Config, root: Path, vlm_art: VLMArtifact) -> str:
    return adapter_stage_spec(cfg, root, vlm_art).key(cfg)


def vlm_stage(cfg: Config, root: Path, progress: bool = True) -> VLMArtifact:
    """Use published weights when ``vlm.pretrained`` is set; otherwise pretrain a custom config."""
    out = cfg.layout.vlm()
    if cfg.vlm.pretrained is not None:
        art = VLMArtifact(cfg.vlm.name, cfg.vlm.pretrained, None, published_key(cfg), cfg.vlm)
        with timed_stage("vlm", out) as info:
            info["skipped"] = True  # nothing to train; load once to fail early on missing weights
            art.load()
        return art
    family = VLM_FAMILIES[cfg.vlm.family]
    if cfg.vlm.name not in family.custom_models():
        raise VLMLoadError(
            f"vlm.pretrained: '{cfg.vlm.name}' is a published {cfg.vlm.family} architecture; give its weights tag "
            f"or checkpoint path (custom configs that are pretrained here: {sorted(family.custom_models())})"
        )
    stage = vlm_stage_spec(cfg, root)
    ckpt = out / "model.pt"
    art = VLMArtifact(cfg.vlm.name, None, ckpt, stage.key(cfg), cfg.vlm)

    def pretrain() -> dict:
        images, captions = load_corpus(root, family.image_size(cfg.vlm.name))
        stats = family.pretrain(cfg.vlm, images, captions, cfg.run.seed, ckpt, progress)
        stats["zero_shot"] = zero_shot_report(cfg, root, art.load(), captions)
        write_json(out / "pretrain.json", stats)
        return {"checkpoint": str(ckpt), "stats": stats}

    return run_stage(cfg, stage, pretrain, lambda: art)


def zero_shot_report(cfg: Config, root: Path, vlm: VLM, captions: list[str] | None = None) -> dict:
    """Zero-shot object accuracy on the test split: among the benchmark's classes, and (harder)
    among every shape named in the caption corpus; plus what the VLM's family reports (ProLIP: CSD
    ranking and its text uncertainty over ``captions``)."""
    test = WaterbirdsDataset(root, "test", image_size=vlm.image_size, with_masks=False)
    images = stack_images(test)
    report = {"n": int(len(test)), "classes": test.classes}
    sets = label_sets(root, test)
    for name, (classes, labels) in sets.items():
        report[f"acc_{name}"] = zero_shot_accuracy(vlm, images, labels, classes, cfg.vlm.class_template)
        if name == "all_shapes":
            report["all_shapes"] = classes
    report.update(VLM_FAMILIES[cfg.vlm.family].report(vlm, images, sets, cfg.vlm.class_template, captions or []))
    return report


def label_sets(root: Path, split: WaterbirdsDataset) -> dict[str, tuple[list[str], np.ndarray]]:
    """The zero-shot tasks of a split: its classes, and (when the embedded benchmark's corpus names more
    shapes than its classes) every shape, each as (class names, labels)."""
    labels = split.rows["y"].to_numpy()
    out = {"classes": (split.classes, labels)}
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").is_file() else {}
    shapes = meta.get("shapes")
    if shapes and all(c in shapes for c in split.classes):
        out["all_shapes"] = (list(shapes), np.array([shapes.index(split.classes[y]) for y in labels]))
    return out


def adapter_stage(cfg: Config, root: Path, vlm_art: VLMArtifact, progress: bool = True) -> Path:
    """Train the ProbVLM adapters on the frozen VLM's embeddings of the caption corpus."""
    out = cfg.layout.adapters()
    ckpt = out / "adapters.pt"

    def fit() -> dict:
        if not (root / "captions.csv").is_file():
            raise FileNotFoundError(f"{root / 'captions.csv'}: the adapters need an image–caption corpus")
        vlm = vlm_art.load()
        images, captions = load_corpus(root, vlm.image_size)
        img, txt = embed_pairs(vlm, images, captions)
        _pair, stats = train_adapters(img, txt, cfg.adapter, cfg.run.seed, ckpt, progress)
        write_json(out / "adapters.json", stats)
        return {"checkpoint": str(ckpt), "stats": stats}

    return run_stage(cfg, adapter_stage_spec(cfg, root, vlm_art), fit, lambda: ckpt)


def map_provenance(cfg: Config, vlm_art: VLMArtifact, sources: list, layer: str) -> dict:
    """What produced a map store: enough to tell two stores apart and to reproduce one. What every
    source shares (VLM, prompts, layer, data, sharding) at the top; each source's own under
    ``sources`` (e.g. PARIC's K, seed and adapters hash)."""
    return {
        "vlm": vlm_art.name,
        "vlm_weights": vlm_art.weights(),
        "sources": {name: src.provenance() for name, src in zip(cfg.maps.sources, sources)},
        "prompts": list(cfg.vlm.prompts),
        "K": cfg.maps.K,
        "seed": cfg.maps.seed,
        "saliency_layer": layer,
        "shard_size": cfg.maps.shard_size,
        "batch_size": cfg.maps.batch_size,
        "data": dataset_fingerprint(cfg.data_root()),  # content, not a path: a moved output stays valid
        "paric_version": __version__,
    }
