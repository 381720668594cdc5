"""Training data: images joined to their reference maps by ``image_id``, as batches of tensors.

Why one joiner for both readers: the plain loop holds a split in memory and Ray Data streams it
from the map store; both call :class:`ImageJoiner` on a table of map-store rows, so a batch has
the same keys and values whichever way it arrived.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from paric.data import WaterbirdsDataset
from paric.data.dataset import load_image, load_mask
from paric.regularizers.reference import resize_mask
from paric.store import MAP_PREFIX, read_store


def spatial(key: str) -> bool:
    """Batch keys laid out like the image (mirrored with it): the image, its mask, every map column."""
    return key in ("image", "mask") or key.startswith(MAP_PREFIX)


class ImageJoiner:
    """Adds ``image`` (B,H,W,3) uint8 and, when asked, ``mask`` (B,H,W) uint8 to a batch of
    map-store rows, looking each ``image_id`` up in the dataset's metadata."""

    def __init__(self, root: str | Path, split: str, image_size: int, with_mask: bool) -> None:
        self.ds = WaterbirdsDataset(root, split, image_size=image_size, with_masks=with_mask)
        if with_mask and not self.ds.has_masks:
            raise FileNotFoundError(f"{self.ds.mask_dir}: the oracle method and mask metrics need object masks")
        self.with_mask, self.image_size = with_mask, image_size
        self.index = {f: i for i, f in enumerate(self.ds.rows["img_filename"])}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = [str(i) for i in batch["image_id"]]
        missing = [i for i in ids if i not in self.index]
        if missing:
            raise KeyError(f"map store rows {missing[:3]} are not images of split '{self.ds.split}' in "
                           f"{self.ds.metadata_path}: the store was built from another dataset")
        rows = [self.index[i] for i in ids]
        out = dict(batch)
        out["image"] = np.stack([load_image(self.ds.image_path(r), self.image_size) for r in rows])
        if self.with_mask:
            out["mask"] = np.stack([load_mask(self.ds.mask_path(r), self.image_size) for r in rows]).astype(np.uint8)
        return out


def join_images(batch: dict[str, np.ndarray], root: str, split: str, image_size: int,
                with_mask: bool) -> dict[str, np.ndarray]:
    """:class:`ImageJoiner` as a plain function (Ray Data task); the split's metadata is re-read per
    batch (milliseconds), so a changed dataset is never joined from a stale index."""
    return ImageJoiner(root, split, image_size, with_mask)(batch)


def load_split(root: str | Path, store_dir: str | Path, split: str, image_size: int, columns: list[str],
               with_mask: bool, k_max: int | None = None) -> dict[str, np.ndarray]:
    """A whole split in memory: map-store ``columns`` (+ image_id, label, group) joined to images."""
    maps = [c for c in columns if c.startswith(MAP_PREFIX)]
    store = read_store(Path(store_dir), columns=["image_id", "label", "group", *maps])
    batch: dict[str, np.ndarray] = {"image_id": np.asarray(store.image_id), "label": store.label, "group": store.group}
    for c in maps:
        arr = store.maps[c]
        batch[c] = arr[:, :k_max] if (arr.ndim == 4 and k_max) else arr  # samples: the first k_max of K
    return ImageJoiner(root, split, image_size, with_mask)(batch)


def majority_groups(label: np.ndarray, group: np.ndarray) -> list[int]:
    """Each class's most frequent group in the train split (its spurious place), sorted."""
    label, group = np.asarray(label), np.asarray(group)
    out = set()
    for c in np.unique(label):
        values, counts = np.unique(group[label == c], return_counts=True)
        out.add(int(values[np.argmax(counts)]))
    return sorted(out)


def train_view(train_groups: str, label: np.ndarray, group: np.ndarray) -> np.ndarray | None:
    """Rows of the train split a method trains on: None for all, else a boolean mask.

    ``majority``: only each class's majority group, so the spurious cue predicts the label
    perfectly (Waterbirds-100's setting) from the same images, maps and store as the full split.
    """
    if train_groups == "all":
        return None
    return np.isin(np.asarray(group), majority_groups(label, group))


def group_balanced_probabilities(group: np.ndarray) -> np.ndarray:
    """Per-row draw probabilities ∝ 1 / n_g: every group present is drawn equally often in expectation."""
    group = np.asarray(group, dtype=np.int64)
    counts = np.bincount(group)
    p = 1.0 / counts[group]
    return p / p.sum()


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int, p: np.ndarray | None = None) -> np.ndarray:
    """Row indices of one epoch, a function of (seed, epoch) only: in order, a permutation, or (with
    draw probabilities ``p``) n draws with replacement, as PyTorch's WeightedRandomSampler that
    Sagawa et al. use for group-balanced batches."""
    rng = np.random.default_rng([seed, epoch])
    if p is not None:
        return rng.choice(n, size=n, replace=True, p=p)
    return rng.permutation(n) if shuffle else np.arange(n)


def iterate(arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool, seed: int = 0,
            epoch: int = 0, sampling: str = "uniform") -> Iterator[dict[str, torch.Tensor]]:
    """Batches of tensors from in-memory arrays; the order depends only on (seed, epoch).
    ``sampling='group_balanced'``: rows drawn with replacement at probability ∝ 1/n_g."""
    n = len(arrays["label"])
    p = group_balanced_probabilities(arrays["group"]) if sampling == "group_balanced" else None
    order = epoch_order(n, shuffle, seed, epoch, p)
    keys = [k for k in arrays if k != "image_id"]
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield {k: torch.from_numpy(np.ascontiguousarray(arrays[k][idx])) for k in keys}


def prepare(batch: dict[str, torch.Tensor], image_size: int, device: torch.device,
            flip: torch.Tensor | None = None, mask_resize: str = "nearest") -> dict[str, torch.Tensor]:
    """uint8 NHWC images -> float NCHW in [0, 1] at ``image_size``; maps and masks follow a flip.

    ``flip``: (B,) bool, images (and their maps/masks) to mirror horizontally. ``mask_resize``:
    ``nearest`` or GALS' ``any`` (see :func:`paric.regularizers.reference.resize_mask`).
    """
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    x = out["image"].permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    out["image"] = x
    out["label"] = out["label"].long()
    out["group"] = out["group"].long()
    if "mask" in out:
        m = out["mask"].float()
        if m.shape[-1] != image_size:
            m = resize_mask(m, (image_size, image_size), mask_resize)
        out["mask"] = m
    if flip is not None and bool(flip.any()):
        f = flip.to(device)
        for k in [k for k in out if spatial(k)]:
            v = out[k]
            out[k] = torch.where(f.view(-1, *([1] * (v.dim() - 1))), v.flip(-1), v)
    return out
