"""Where each stage writes under ``run.output_dir``: the tree of docs/outputs.md, in one place.

Why: paths such as ``train/<method>/seed<s>/model.pt`` were built by hand in a dozen places across
the stages, the report and the commands, so renaming a directory meant finding each of them. A
:class:`Layout` is plain paths (no I/O, no config import), so the config hands one out
(``cfg.layout``) and anything that only holds an output directory can build one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: a finished run's best-validation weights (figures, MLflow artifact, DFR's base)
MODEL = "model.pt"
#: a finished run's test metrics and history
RESULT = "result.json"
#: the VLM pretrained here (or the record of published weights)
VLM_CHECKPOINT = "model.pt"
#: the classifier backbone pretrained on the caption corpus
BACKBONE_CHECKPOINT = "backbone.pt"


@dataclass(frozen=True)
class Layout:
    """The output tree rooted at ``root`` (an absolute ``run.output_dir``)."""

    root: Path

    def train(self) -> Path:
        """``train/``: one directory per method, the methods table and summary beside them."""
        return self.root / "train"

    def run(self, method: str, seed: int) -> Path:
        """One final run: ``train/<method>/seed<seed>``."""
        return self.train() / method / f"seed{seed}"

    def model(self, method: str, seed: int) -> Path:
        return self.run(method, seed) / MODEL

    def result(self, method: str, seed: int) -> Path:
        return self.run(method, seed) / RESULT

    def maps(self, split: str | None = None) -> Path:
        """The map store: ``maps/``, or one split's Parquet parts."""
        return self.root / "maps" if split is None else self.root / "maps" / split

    def quality(self) -> Path:
        return self.maps() / "quality.json"

    def vlm(self) -> Path:
        return self.root / "vlm" / "clip"

    def vlm_checkpoint(self) -> Path:
        return self.vlm() / VLM_CHECKPOINT

    def adapters(self) -> Path:
        return self.root / "vlm" / "adapters"

    def backbone(self) -> Path:
        return self.root / "classifier" / "backbone"

    def backbone_checkpoint(self) -> Path:
        return self.backbone() / BACKBONE_CHECKPOINT

    def sweep(self, method: str) -> Path:
        return self.root / "sweep" / method

    def zeroshot(self) -> Path:
        return self.root / "zeroshot"

    def report(self) -> Path:
        return self.root / "report"
