"""Seeded generator of a small Waterbirds-format benchmark with a paired caption corpus.

Why: the pipeline needs a dataset that (a) has the same on-disk layout as the real Waterbirds
benchmark so one reader serves both, (b) has a controllable spurious correlation between the
label (foreground shape) and the background (place), (c) ships exact foreground masks so that
attention maps can be scored, and (d) comes with an image-caption corpus on which a tiny CLIP
can be pretrained. Everything is derived from ``SyntheticConfig``; the same config always gives
byte-identical CSVs and identical pixels, whatever the number of worker processes.

Layout written under ``root``::

    metadata.csv                      img_filename,y,place,split,shape   (split: 0/1/2)
    images/001.circle/circle_000000.jpg
    masks/001.circle/circle_000000.png   (mode L, 0/255: exactly the drawn shape)
    captions.csv                      img_filename,caption,shape,place  (names; shape '' = empty)
    captions/000000.jpg
    dataset.json                      format, classes, places, shapes, generator, config_hash
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import math
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from paric.config import SyntheticConfig
from paric.io import atomic_dir

log = logging.getLogger(__name__)

#: Bumped whenever the rendering changes, so a cached benchmark from older code is not reused.
#: v2: a place cue of per-image strength (mixed with a neutral grey), an optional class-specific
#: internal pattern of per-image contrast, and the object's size range as a config key.
GENERATOR_VERSION = 2

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Independent random streams; each image gets SeedSequence(seed, spawn_key=(stream, index)) so
# its pixels do not depend on the order or the process in which it is rendered.
_STREAM_META, _STREAM_BENCH, _STREAM_CAPTABLE, _STREAM_CAPTION = 0, 1, 2, 3

#: v1's mask area as a fraction of the image (``SyntheticConfig.object_area`` now; default larger).
AREA_RANGE = (0.05, 0.11)

JPEG_OPTIONS = {"quality": 95, "subsampling": 0}


# --------------------------------------------------------------------------------------------
# Shapes: unit polygons, centred at the origin. The area is normalised at draw time.
# --------------------------------------------------------------------------------------------
def _regular(n: int, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _circle() -> np.ndarray:
    return _regular(48)


def _ellipse() -> np.ndarray:
    return _regular(48) * np.array([1.0, 0.55])


def _square() -> np.ndarray:
    return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)


def _rectangle() -> np.ndarray:
    return _square() * np.array([1.0, 0.5])


def _triangle() -> np.ndarray:
    return _regular(3)


def _star() -> np.ndarray:
    outer, inner = _regular(5), _regular(5, -math.pi / 2 + math.pi / 5) * 0.45
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _pentagon() -> np.ndarray:
    return _regular(5)


def _hexagon() -> np.ndarray:
    return _regular(6)


def _diamond() -> np.ndarray:
    return np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], dtype=float)


def _cross() -> np.ndarray:
    a = 1 / 3
    return np.array(
        [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
        dtype=float,
    )


#: name -> function returning unit polygon vertices (N, 2). Tests monkeypatch entries here.
SHAPE_DRAWERS: dict[str, Callable[[], np.ndarray]] = {
    "circle": _circle,
    "ellipse": _ellipse,
    "square": _square,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "star": _star,
    "pentagon": _pentagon,
    "hexagon": _hexagon,
    "diamond": _diamond,
    "cross": _cross,
}


def _polygon_area(v: np.ndarray) -> float:
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _shape_mask(shape: str, size: int, rng: np.random.Generator,
                area_range: tuple[float, float] = AREA_RANGE) -> np.ndarray:
    """Boolean HxW mask of one randomly scaled, rotated and placed shape, fully inside."""
    unit = np.asarray(SHAPE_DRAWERS[shape](), dtype=float)
    area = rng.uniform(*area_range) * size * size
    theta = rng.uniform(0.0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    v = unit @ rot.T * math.sqrt(area / _polygon_area(unit))
    lo, hi = v.min(axis=0), v.max(axis=0)
    low = 1.0 - lo  # keep a one-pixel margin; the polygon fill includes its boundary pixels
    high = np.maximum(size - 2.0 - hi, low)
    v = v + rng.uniform(low, high)
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in v], fill=255)
    return np.asarray(img) > 0


# --------------------------------------------------------------------------------------------
# Places: procedural backgrounds, one texture/palette family per place name.
# --------------------------------------------------------------------------------------------
def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random (cells+1)^2 grid upsampled bilinearly."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    up = Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(up, dtype=np.float32)


def _jitter(rng: np.random.Generator, rgb: Iterable[float], amount: float = 0.04) -> np.ndarray:
    c = np.asarray(list(rgb), dtype=np.float32) + rng.normal(0.0, amount, 3).astype(np.float32)
    return c * np.float32(rng.uniform(0.88, 1.08))


def _mix(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)[..., None]
    return a * (1.0 - t) + b * t


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size, dtype=np.float32) / size
    return np.meshgrid(r, r)  # x varies along columns, y along rows


def _bg_land(rng: np.random.Generator, size: int) -> np.ndarray:
    """Foliage: dark green / olive-brown low-frequency blobs."""
    t = 0.65 * _noise(rng, size, 4) + 0.35 * _noise(rng, size, 9)
    t = (t - 0.5) * 2.2 + 0.5
    return _mix(t, _jitter(rng, (0.12, 0.33, 0.10)), _jitter(rng, (0.45, 0.36, 0.16)))


def _bg_water(rng: np.random.Generator, size: int) -> np.ndarray:
    """Water: blues with horizontal, gently wobbling wave stripes."""
    x, y = _coords(size)
    wobble = 0.6 * np.sin(2 * np.pi * (x * rng.uniform(0.5, 2.0) + rng.uniform()))
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (y * rng.uniform(4.0, 8.0) + rng.uniform()) + wobble)
    t = 0.75 * t + 0.25 * _noise(rng, size, 5)
    return _mix(t, _jitter(rng, (0.04, 0.20, 0.45)), _jitter(rng, (0.30, 0.58, 0.82)))


def _bg_desert(rng: np.random.Generator, size: int) -> np.ndarray:
    """Desert: sand tones with slanted dune bands."""
    x, y = _coords(size)
    ang = rng.uniform(-0.5, 0.5)
    u = y * math.cos(ang) + x * math.sin(ang)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (u * rng.uniform(1.5, 3.0) + rng.uniform()) + 2.0 * _noise(rng, size, 3))
    return _mix(t, _jitter(rng, (0.68, 0.50, 0.28)), _jitter(rng, (0.90, 0.76, 0.50)))


def _bg_snow(rng: np.random.Generator, size: int) -> np.ndarray:
    """Snow: bright, low-contrast, cold greys with sparse speckles."""
    t = 0.7 * _noise(rng, size, 3) + 0.3 * _noise(rng, size, 12)
    img = _mix(t, _jitter(rng, (0.74, 0.79, 0.87), 0.02), _jitter(rng, (0.95, 0.96, 0.98), 0.02))
    speck = rng.random((size, size)) < 0.02
    img[speck] = np.float32(1.0)
    return img


def _bg_sky(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sky: vertical light-blue gradient with soft cloud puffs."""
    _, y = _coords(size)
    img = _mix(y, _jitter(rng, (0.35, 0.60, 0.92)), _jitter(rng, (0.70, 0.84, 0.97)))
    cloud = np.clip((_noise(rng, size, 4) - 0.55) * 4.0, 0.0, 1.0)
    return _mix(cloud, img, np.ones(3, np.float32))


def _bg_urban(rng: np.random.Generator, size: int) -> np.ndarray:
    """Urban: grey blocks of varying brightness on a grid."""
    cells = int(rng.integers(3, 7))
    grid = rng.uniform(0.0, 1.0, (cells, cells)).astype(np.float32)
    t = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.NEAREST))
    return _mix(t, _jitter(rng, (0.30, 0.30, 0.32), 0.02), _jitter(rng, (0.62, 0.62, 0.60), 0.02))


def _bg_generic(name: str) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Unknown place: a palette and noise scale derived deterministically from the name."""
    h = hashlib.sha256(name.encode()).digest()
    hue, spread, cells = h[0] / 255.0, 0.05 + 0.15 * h[1] / 255.0, 2 + h[2] % 8
    a = colorsys.hsv_to_rgb(hue, 0.6, 0.35)
    b = colorsys.hsv_to_rgb((hue + spread) % 1.0, 0.45, 0.8)

    def draw(rng: np.random.Generator, size: int) -> np.ndarray:
        return _mix(_noise(rng, size, cells), _jitter(rng, a), _jitter(rng, b))

    return draw


PLACE_DRAWERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "land": _bg_land,
    "forest": _bg_land,
    "water": _bg_water,
    "desert": _bg_desert,
    "snow": _bg_snow,
    "sky": _bg_sky,
    "urban": _bg_urban,
    "city": _bg_urban,
}


def _place_drawer(name: str) -> Callable[[np.random.Generator, int], np.ndarray]:
    return PLACE_DRAWERS.get(name) or _bg_generic(name)


# --------------------------------------------------------------------------------------------
# Object patterns (v2): each shape carries its own internal pattern, so the object's evidence is
# inside its mask and not only at its edges (half of whose pixels lie outside the mask).
# --------------------------------------------------------------------------------------------
def _pattern_rings(u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    return np.cos(2 * np.pi * np.hypot(u, v) / period)


def _pattern_stripes(u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    return np.cos(2 * np.pi * u / period)


def _pattern_checker(u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    return np.sign(np.cos(np.pi * u / (period / 2)) * np.cos(np.pi * v / (period / 2)))


def _pattern_dots(u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    du = (u / period) % 1.0 - 0.5
    dv = (v / period) % 1.0 - 0.5
    return np.where(np.hypot(du, dv) < 0.28, 1.0, -1.0)


#: pattern name -> f(u, v, period) in [-1, 1], u/v: object-centred pixel coordinates (rotated)
PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "rings": _pattern_rings, "stripes": _pattern_stripes, "checker": _pattern_checker, "dots": _pattern_dots}
SHAPE_PATTERNS = {"circle": "rings", "triangle": "stripes", "square": "checker", "star": "dots"}


def shape_pattern(shape: str) -> str:
    """The shape's own pattern; shapes without a fixed one get one derived from their name."""
    return SHAPE_PATTERNS.get(shape) or sorted(PATTERNS)[hashlib.sha256(shape.encode()).digest()[0] % len(PATTERNS)]


def _neutral_bg(rng: np.random.Generator, size: int) -> np.ndarray:
    """A place-free grey background that a weak place cue is mixed into."""
    t = 0.6 * _noise(rng, size, 5) + 0.4 * _noise(rng, size, 11)
    return _mix(t, _jitter(rng, (0.35, 0.35, 0.35), 0.03), _jitter(rng, (0.62, 0.62, 0.62), 0.03))


def render(shape: str | None, place: str, size: int, rng: np.random.Generator,
           cfg: SyntheticConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One scene before JPEG coding: (uint8 HxWx3 image, bool HxW mask of the object).

    The object has a random hue (colour carries no class or place signal) modulated by its shape's
    pattern at a per-image contrast; the background is the place's texture mixed with a neutral
    grey at a per-image strength, so the spurious cue's margin varies from image to image.
    """
    cfg = cfg or SyntheticConfig()
    img = _place_drawer(place)(rng, size)
    lo, hi = cfg.place_strength
    strength = np.float32(rng.uniform(lo, hi))
    if strength < 1.0:
        img = strength * img + (np.float32(1.0) - strength) * _neutral_bg(rng, size)
    img = img * np.float32(255.0) + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(4.0)
    img = np.clip(img + np.float32(0.5), 0.0, 255.0).astype(np.uint8)
    if shape is None:
        return img, np.zeros((size, size), dtype=bool)
    mask = _shape_mask(shape, size, rng, tuple(cfg.object_area))
    colour = np.asarray(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)))
    lo, hi = cfg.pattern_contrast
    contrast = rng.uniform(lo, hi)
    if contrast > 0:
        ys, xs = np.nonzero(mask)
        theta = rng.uniform(0.0, 2 * math.pi)
        cy, cx = ys.mean(), xs.mean()
        u = (xs - cx) * math.cos(theta) + (ys - cy) * math.sin(theta)
        v = -(xs - cx) * math.sin(theta) + (ys - cy) * math.cos(theta)
        period = cfg.pattern_period * size / 64.0
        p = PATTERNS[shape_pattern(shape)](u, v, period)
        shade = 1.0 + 0.5 * contrast * p[:, None]  # brightness about the object's colour
        img[ys, xs] = np.clip(np.round(colour[None, :] * shade * 255.0), 0, 255).astype(np.uint8)
    else:
        img[mask] = np.round(colour * 255.0).astype(np.uint8)
    return img, mask


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------
PLACE_WORDS: dict[str, list[str]] = {
    "land": ["land", "forest", "grass", "woods", "meadow"],
    "forest": ["forest", "woods", "trees"],
    "water": ["water", "lake", "sea", "ocean", "river"],
    "desert": ["desert", "sand", "dunes"],
    "snow": ["snow", "snowfield", "ice"],
    "sky": ["sky", "clouds", "air"],
    "urban": ["city", "street", "buildings"],
    "city": ["city", "street", "buildings"],
}

GENERIC_NOUNS = ["shape", "object"]
#: fraction of object captions that say "a shape"/"an object" instead of the class name
GENERIC_FRACTION = 0.2

OBJECT_TEMPLATES = [
    "a photo of {obj} in the {place}",
    "{obj} on {place} background",
    "an image of {obj} over {place}",
    "{place} scene with {obj}",
    "{obj}",
    "a photo of {obj}",
    "a picture of {obj} and the {place}",
    "{obj} against the {place}",
    "there is {obj} in this {place} picture",
    "a drawing of {obj} on the {place}",
    "close-up of {obj} with {place} behind it",
]
EMPTY_TEMPLATES = [
    "a photo of the {place}",
    "an empty {place} scene",
    "the {place}",
    "a view of the {place}",
    "{place} with nothing in it",
    "a plain {place} background",
]


def place_words(place: str) -> list[str]:
    return PLACE_WORDS.get(place, [place.replace("_", " ")])


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def make_caption(shape: str | None, place: str, rng: np.random.Generator) -> str:
    """Caption naming the shape (or a generic noun) and usually the place; never the colour."""
    where = str(rng.choice(place_words(place)))
    if shape is None:
        return str(rng.choice(EMPTY_TEMPLATES)).format(place=where)
    noun = str(rng.choice(GENERIC_NOUNS)) if rng.random() < GENERIC_FRACTION else shape.replace("_", " ")
    return str(rng.choice(OBJECT_TEMPLATES)).format(obj=_article(noun), place=where)


# --------------------------------------------------------------------------------------------
# Tables: labels and captions are decided up front from their own streams.
# --------------------------------------------------------------------------------------------
def _rng(cfg: SyntheticConfig, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(stream, index)))


def _check_names(cfg: SyntheticConfig) -> None:
    unknown = [s for s in cfg.shapes if s not in SHAPE_DRAWERS]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown} in synthetic.shapes; known: {sorted(SHAPE_DRAWERS)}")
    for name, names in (("classes", cfg.classes), ("places", cfg.places), ("shapes", cfg.shapes)):
        if len(set(names)) != len(names):
            raise ValueError(f"synthetic.{name} has duplicates: {names}")
    n_groups = len(cfg.classes) * len(cfg.places)
    for split in ("val", "test"):
        n = getattr(cfg, f"n_{split}")
        if n < n_groups:
            raise ValueError(f"synthetic.n_{split}={n} is smaller than the number of groups ({n_groups})")


def _train_labels(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Balanced classes; exactly round(ratio * n_c) images of class c on its own place.

    Exact counts (rather than independent coin flips) keep the requested ratio, and the
    minority groups, even in tiny debug runs.
    """
    n_c, n_p = len(cfg.classes), len(cfg.places)
    ys, ps = [], []
    counts = np.full(n_c, cfg.n_train // n_c)
    counts[: cfg.n_train % n_c] += 1
    for y, n in enumerate(counts):
        own = y % n_p
        n_own = int(round(cfg.ratio * n))
        others = np.array([p for p in range(n_p) if p != own])
        place = np.concatenate([np.full(n_own, own), rng.choice(others, size=n - n_own)])
        ys.append(np.full(n, y))
        ps.append(place)
    y, p = np.concatenate(ys), np.concatenate(ps)
    order = rng.permutation(len(y))
    return y[order], p[order]


def _balanced_labels(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Equal counts per (y, place) group; the remainder goes to randomly chosen groups."""
    n_c, n_p = len(cfg.classes), len(cfg.places)
    g = n_c * n_p
    counts = np.full(g, n // g)
    counts[rng.permutation(g)[: n % g]] += 1
    groups = rng.permutation(np.repeat(np.arange(g), counts))
    return groups // n_p, groups % n_p


def build_metadata(cfg: SyntheticConfig) -> pd.DataFrame:
    """The benchmark's metadata table (no pixels): cheap, so label statistics can be tested."""
    _check_names(cfg)
    rng = _rng(cfg, _STREAM_META)
    parts = [(0, *_train_labels(cfg, rng))]
    parts += [(1, *_balanced_labels(cfg, cfg.n_val, rng)), (2, *_balanced_labels(cfg, cfg.n_test, rng))]
    ys = np.concatenate([p[1] for p in parts])
    places = np.concatenate([p[2] for p in parts])
    splits = np.concatenate([np.full(len(p[1]), p[0]) for p in parts])
    names = [cfg.classes[y] for y in ys]
    files = [f"{y + 1:03d}.{c}/{c}_{i:06d}.jpg" for i, (y, c) in enumerate(zip(ys, names))]
    return pd.DataFrame(
        {"img_filename": files, "y": ys.astype(int), "place": places.astype(int), "split": splits.astype(int), "shape": names}
    )


def build_caption_table(cfg: SyntheticConfig) -> pd.DataFrame:
    """The caption corpus (no pixels): shape and place independent, some scenes empty."""
    _check_names(cfg)
    rng = _rng(cfg, _STREAM_CAPTABLE)
    n = cfg.n_captions
    n_empty = int(round(cfg.empty_fraction * n))
    empty = np.zeros(n, dtype=bool)
    empty[rng.permutation(n)[:n_empty]] = True
    shapes = rng.integers(0, len(cfg.shapes), n)
    places = rng.integers(0, len(cfg.places), n)
    rows = []
    for i in range(n):
        shape = None if empty[i] else cfg.shapes[shapes[i]]
        place = cfg.places[places[i]]
        rows.append((f"{i:06d}.jpg", make_caption(shape, place, rng), shape or "", place))
    return pd.DataFrame(rows, columns=["img_filename", "caption", "shape", "place"])


# --------------------------------------------------------------------------------------------
# Rendering to disk
# --------------------------------------------------------------------------------------------
def config_hash(cfg: SyntheticConfig) -> str:
    blob = json.dumps({"version": GENERATOR_VERSION, "config": cfg.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# A task: (stream, index, shape or None, place name, image path, mask path or None)
_Task = tuple[int, int, str | None, str, str, str | None]
_worker_cfg: SyntheticConfig | None = None


def _init_worker(cfg_json: str) -> None:
    global _worker_cfg
    _worker_cfg = SyntheticConfig.model_validate_json(cfg_json)


def _render_task(cfg: SyntheticConfig, task: _Task) -> None:
    stream, index, shape, place, img_path, mask_path = task
    img, mask = render(shape, place, cfg.image_size, _rng(cfg, stream, index), cfg)
    Image.fromarray(img).save(img_path, format="JPEG", **JPEG_OPTIONS)
    if mask_path is not None:
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(mask_path, format="PNG")


def _render_chunk(tasks: list[_Task]) -> int:
    assert _worker_cfg is not None
    for t in tasks:
        _render_task(_worker_cfg, t)
    return len(tasks)


def _tasks(cfg: SyntheticConfig, out: Path, meta: pd.DataFrame, caps: pd.DataFrame) -> list[_Task]:
    tasks: list[_Task] = []
    for folder in sorted({f.split("/")[0] for f in meta["img_filename"]}):
        (out / "images" / folder).mkdir(parents=True, exist_ok=True)
        (out / "masks" / folder).mkdir(parents=True, exist_ok=True)
    for i, (f, place) in enumerate(zip(meta["img_filename"], meta["place"])):
        img = out / "images" / f
        msk = (out / "masks" / f).with_suffix(".png")
        tasks.append((_STREAM_BENCH, i, meta["shape"].iat[i], cfg.places[int(place)], str(img), str(msk)))
    (out / "captions").mkdir(parents=True, exist_ok=True)
    for i, (f, shape, place) in enumerate(zip(caps["img_filename"], caps["shape"], caps["place"])):
        tasks.append((_STREAM_CAPTION, i, shape or None, place, str(out / "captions" / f), None))
    return tasks


def _write(cfg: SyntheticConfig, out: Path, progress: bool, workers: int) -> None:
    from tqdm.auto import tqdm

    meta, caps = build_metadata(cfg), build_caption_table(cfg)
    tasks = _tasks(cfg, out, meta, caps)
    bar = tqdm(total=len(tasks), desc="synthetic benchmark", unit="img", disable=not progress)
    try:
        if workers <= 1:
            for t in tasks:
                _render_task(cfg, t)
                bar.update(1)
        else:
            chunks = [tasks[i : i + 256] for i in range(0, len(tasks), 256)]
            with multiprocessing.get_context().Pool(workers, _init_worker, (cfg.model_dump_json(),)) as pool:
                for n in pool.imap_unordered(_render_chunk, chunks):
                    bar.update(n)
    finally:
        bar.close()
    meta.to_csv(out / "metadata.csv", index=False, lineterminator="\n")
    caps.to_csv(out / "captions.csv", index=False, lineterminator="\n")
    info = {
        "format": "waterbirds",
        "classes": list(cfg.classes),
        "places": list(cfg.places),
        "shapes": list(cfg.shapes),
        "image_dir": "images",
        "mask_dir": "masks",
        "caption_dir": "captions",
        "generator": cfg.model_dump(mode="json"),
        "generator_version": GENERATOR_VERSION,
        "config_hash": config_hash(cfg),
    }
    # dataset.json last: its presence marks a complete benchmark.
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")


def _existing_hash(root: Path) -> str | None:
    try:
        return json.loads((root / "dataset.json").read_text()).get("config_hash")
    except (OSError, ValueError, AttributeError):
        return None


def _check_existing(root: Path, want: str) -> bool:
    """True if ``root`` already holds this benchmark; raise if it holds anything else."""
    if not root.exists():
        return False
    if root.is_dir() and not any(root.iterdir()):
        return False
    have = _existing_hash(root)
    if have == want:
        return True
    what = f"a benchmark with config_hash {have}" if have else "files that are not a generated benchmark"
    raise FileExistsError(
        f"{root} already contains {what}, but the synthetic config hashes to {want}. "
        f"Delete {root} or change run.output_dir (or data.root); it is never deleted automatically."
    )


def generate_benchmark(
    cfg: SyntheticConfig, root: Path, progress: bool = True, *, workers: int | None = None
) -> Path:
    """Write the benchmark to ``root`` (atomically) unless the same config is already there.

    ``workers``: render processes; default uses up to 2 for large configs, 1 for small ones.
    Output is identical for any number of workers.
    """
    root = Path(root)
    _check_names(cfg)
    want = config_hash(cfg)
    if _check_existing(root, want):
        log.info("benchmark exists, skipping: %s", root)
        return root
    if workers is None:
        total = cfg.n_train + cfg.n_val + cfg.n_test + cfg.n_captions
        workers = min(2, os.cpu_count() or 1) if total >= 4000 else 1
    try:
        with atomic_dir(root, replace=False) as tmp:
            _write(cfg, tmp, progress, workers)
    except OSError:
        if not _check_existing(root, want):  # lost a race to a process writing the same data?
            raise
    log.info("wrote synthetic benchmark to %s", root)
    return root
