"""Stage: the classifier backbone pretrained on the balanced caption corpus (``classifier.weights=corpus``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paric.config import Config
from paric.data import WaterbirdsDataset
from paric.data.fingerprint import dataset_fingerprint
from paric.stages.cache import read_marker
from paric.stages.runner import Stage, run_stage
from paric.stages.prepare import load_corpus
from paric.train.backbone import pretrain_backbone


def corpus_labels(root: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(shape index with len(shapes) for 'none', place index, shapes, places) from captions.csv."""
    path = root / "captions.csv"
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    for col in ("shape", "place"):
        if col not in df.columns:
            raise ValueError(f"{path}: classifier.weights=corpus needs a '{col}' column (labels of the balanced corpus)")
    info = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").is_file() else {}
    shapes = info.get("shapes") or sorted(s for s in df["shape"].unique() if s)
    places = info.get("places") or sorted(df["place"].unique())
    try:
        shape = np.array([shapes.index(s) if s else len(shapes) for s in df["shape"]])
        place = np.array([places.index(p) for p in df["place"]])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} (known shapes {shapes}, places {places})") from None
    return shape, place, shapes, places


BACKBONE_KEYS = ("classifier.arch", "classifier.width", "classifier.image_size", "classifier.pretrain", "run.seed")


def backbone_stage_spec(cfg: Config, root: Path) -> Stage:
    """The backbone stage: its config, the seed and the corpus' content."""
    return Stage("backbone", cfg.layout.backbone(), BACKBONE_KEYS, (dataset_fingerprint(root),),
                 outputs=("backbone.pt",))


def backbone_key(cfg: Config, root: Path) -> str:
    return backbone_stage_spec(cfg, root).key(cfg)


def backbone_id(cfg: Config) -> str:
    """What a classifier starts from, for the training keys: the corpus backbone's stage key (so a
    retrained backbone retrains every run), else the named initialisation."""
    if cfg.classifier.weights != "corpus":
        return cfg.classifier.weights
    marker = read_marker(cfg.layout.backbone())
    return str(marker.get("key")) if marker else "missing"


def backbone_stage(cfg: Config, root: Path, progress: bool = True) -> Path | None:
    """Pretrain (or reuse) the corpus backbone; None when the classifier starts otherwise."""
    if cfg.classifier.weights != "corpus":
        return None
    ckpt = cfg.layout.backbone_checkpoint()

    def pretrain() -> dict:
        shape, place, shapes, places = corpus_labels(root)
        images, _ = load_corpus(root, cfg.classifier.image_size)
        if cfg.classifier.pretrain.exclude_classes:
            classes = WaterbirdsDataset(root, "test", with_masks=False).classes
            keep = np.array([s == len(shapes) or shapes[s] not in classes for s in shape])
            images, shape, place = images[torch.from_numpy(keep)], shape[keep], place[keep]
        stats = pretrain_backbone(cfg.classifier, images, shape, place, len(shapes), len(places), cfg.run.seed,
                                  ckpt, progress)
        return {"checkpoint": str(ckpt), "stats": stats}

    return run_stage(cfg, backbone_stage_spec(cfg, root), pretrain, lambda: ckpt)
