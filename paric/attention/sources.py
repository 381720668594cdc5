"""Map sources: each kind of reference map the store can hold, declared once.

A source names its store columns (and their shapes), says what produced them (provenance), and
turns the Grad-CAM engine's maps for its embedding sampler into those columns. The store's schema
is the union of the configured sources' columns (``maps.sources``); the reader, the flip, the
quality stage and the figures iterate over the declared columns instead of naming them.

Adding a source (ProLIP's Gaussian, LaZSL's transport plan) is one class here or in its own
module, registered with ``@MAP_SOURCES.register("name")``, and its name in ``maps.sources``. A source
in its own module registers when :mod:`paric.catalog` imports it: the complete registry is the
catalog's (this module does not import the plugins that import it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from paric.attention.reference import GGDSampler, TextMatch, aggregate_samples
from paric.io import sha256_file
from paric.registry import Registry
from paric.store import MAP_PREFIX  # every map column's name starts with it

if TYPE_CHECKING:
    from paric.config import Config


@dataclass(frozen=True)
class Column:
    """A map column: ``map`` is (h, w) per image, ``samples`` (K, h, w). ``role``: ``reference`` (a map
    a method may regularise towards, scored by the quality stage), ``samples`` (aggregated at train
    time), or ``uncertainty`` (a spread, shown in figures, never a reference)."""

    name: str
    shape: Literal["map", "samples"]
    role: Literal["reference", "samples", "uncertainty"]
    title: str  # how figures label it
    in_figure: bool = False  # a panel of the report's map figure

    @property
    def short(self) -> str:
        """The name without the prefix (``det``, ``mean`` …): how quality.json names it."""
        return self.name.removeprefix(MAP_PREFIX)


class MapSource:
    """One kind of reference map. Instances are plain values (config and checkpoint paths) that
    travel to the map actors, where the runtime part is built. A source is one of two kinds:
    :class:`EngineSource` (Grad-CAM maps of the shared engine) or :class:`ComputedSource` (columns it
    computes itself, as LaZSL's transport plan)."""

    columns: ClassVar[tuple[Column, ...]] = ()
    needs_adapters: ClassVar[bool] = False
    #: the VLM family whose own outputs it needs (ProLIP's σ²), or None for any
    family: ClassVar[str | None] = None
    #: it is a zero-shot classifier too (LaZSL), whose accuracies the zeroshot stage reports
    zero_shot: ClassVar[bool] = False

    def __init__(self, cfg: "Config", adapters: Path | None = None) -> None:
        self.cfg = cfg
        self.adapters = adapters

    def provenance(self) -> dict:
        """What besides the shared VLM, prompts and data produced this source's columns."""
        return {}


class EngineSource(MapSource):
    """A source whose maps are Grad-CAM maps of the one shared engine: it gives the engine an
    embedding sampler and turns the engine's maps for it into columns (one backward pass serves
    every engine source)."""

    def sampler(self, device: torch.device):
        """The embedding sampler the Grad-CAM engine runs for this source (built on the actor)."""
        raise NotImplementedError

    def to_columns(self, maps: torch.Tensor) -> dict[str, np.ndarray]:
        """The engine's (B, n_scores, h, w) maps for this source -> its store columns."""
        raise NotImplementedError


class ComputedSource(MapSource):
    """A source that computes its columns itself, not through the Grad-CAM engine."""

    def setup(self, vlm, classes: list[str], grid: tuple[int, int]) -> None:
        """The runtime part, built once per actor: the VLM, the split's classes and the store's map
        grid (the saliency layer's)."""

    def compute(self, x: torch.Tensor, image_ids: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
        """The columns for normalised images (B, 3, S, S), their ids and labels."""
        raise NotImplementedError


#: map source name (``maps.sources``) -> its class
MAP_SOURCES: Registry[type[MapSource]] = Registry("map source")


@MAP_SOURCES.register("gals")
class GALSSource(EngineSource):
    """GALS' deterministic Grad-CAM map of the image embedding against the prompts."""

    columns = (Column("map_det", "map", "reference", "GALS map (det)", in_figure=True),)

    def sampler(self, device: torch.device) -> TextMatch:
        return TextMatch()

    def to_columns(self, maps: torch.Tensor) -> dict[str, np.ndarray]:
        return {"map_det": maps[:, 0].cpu().numpy()}


@MAP_SOURCES.register("paric")
class PARICSource(EngineSource):
    """PARIC's K maps from GGD-adapter embedding samples, with their mean, median and spread."""

    columns = (Column("map_samples", "samples", "samples", "PARIC samples"),
               Column("map_mean", "map", "reference", "PARIC mean", in_figure=True),
               Column("map_median", "map", "reference", "PARIC median"),
               Column("map_std", "map", "uncertainty", "PARIC std", in_figure=True))
    needs_adapters = True
    #: each image sample times the tower's ‖v‖ (``paric_norm``, ours); False is the published form
    scale_by_norm: ClassVar[bool] = False

    def provenance(self) -> dict:
        """The adapters' content hash and the gamma draw (K, seed: top level). The draw is left out when it
        is ``inverse``, the one every store before issue 31 was written with, so those stay valid."""
        prov = {"adapters": f"sha256:{sha256_file(self.adapters)[:16]}" if self.adapters else None}
        if self.cfg.maps.gamma != "inverse":
            prov["gamma"] = self.cfg.maps.gamma
        return prov

    def sampler(self, device: torch.device) -> GGDSampler:
        from paric.vlm.adapters import load_adapters

        if self.adapters is None:
            raise ValueError("map source 'paric' needs the adapters checkpoint")
        pair = load_adapters(Path(self.adapters))
        pair.image.to(device)
        pair.text.to(device)
        return GGDSampler(pair, self.cfg.maps.K, self.cfg.maps.seed, self.scale_by_norm, self.cfg.maps.gamma)

    def to_columns(self, maps: torch.Tensor) -> dict[str, np.ndarray]:
        return sample_columns(maps, [c.name for c in self.columns])


@MAP_SOURCES.register("paric_norm")
class PARICNormSource(PARICSource):
    """Ours beside PARIC: the same K adapter samples (same uniforms, so sample k is paired with PARIC's),
    each image sample scaled by the tower's embedding norm before it meets the text sample
    (:class:`GGDSampler` ``scale_by_norm``). The published form's maps are Grad-CAMs of a near-cosine,
    which on the embedded benchmark point at the object less often than GALS' map (README)."""

    columns = (Column("map_pn_samples", "samples", "samples", "PARIC-norm samples"),
               Column("map_pn_mean", "map", "reference", "PARIC-norm mean", in_figure=True),
               Column("map_pn_median", "map", "reference", "PARIC-norm median"),
               Column("map_pn_std", "map", "uncertainty", "PARIC-norm std"))
    scale_by_norm = True


def sample_columns(maps: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """A sampling source's (B, K, h, w) maps -> its (samples, mean, median, std) columns, in that order."""
    mean, median, std = (t.cpu().numpy() for t in aggregate_samples(maps))
    return dict(zip(names, (maps.cpu().numpy(), mean, median, std)))


def build_sources(sources: list[MapSource], vlm, prompts: list[str], layer: str, device: torch.device,
                  classes: list[str]):
    """Build the runtime parts once (per actor): the Grad-CAM engine over every engine source's
    sampler (None when there is none), and each other source's :meth:`MapSource.setup`."""
    from paric.attention.gradcam import resolve_layer
    from paric.attention.reference import GradCamEngine

    on_engine = [src for src in sources if isinstance(src, EngineSource)]
    engine = GradCamEngine(vlm, prompts, [src.sampler(device) for src in on_engine], layer=layer) \
        if on_engine else None
    grid = resolve_layer(vlm.model.visual, vlm.image_size, layer).grid
    for src in sources:
        if isinstance(src, ComputedSource):
            src.setup(vlm, classes, grid)
    return engine


def compute_columns(sources: list[MapSource], engine, x: torch.Tensor, image_ids: list[str],
                    labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every source's columns for one batch of normalised images: one engine pass for the Grad-CAM
    sources, then the others' own :meth:`MapSource.compute`."""
    maps = iter(engine(x, image_ids) if engine is not None else [])
    cols: dict[str, np.ndarray] = {}
    for src in sources:
        cols.update(src.to_columns(next(maps)) if isinstance(src, EngineSource)
                    else src.compute(x, image_ids, labels))
    return cols


def configured_sources(cfg: "Config", adapters: Path | None = None) -> list[MapSource]:
    """The sources ``maps.sources`` names, in that order (the order of the engine's score columns)."""
    return [MAP_SOURCES.get(name)(cfg, adapters) for name in cfg.maps.sources]


def declared_columns(names: list[str] | None = None) -> dict[str, Column]:
    """Column name -> its declaration, over the named sources (default: every registered one)."""
    out: dict[str, Column] = {}
    for name in names if names is not None else MAP_SOURCES.names():
        for col in MAP_SOURCES.get(name).columns:
            out[col.name] = col
    return out
