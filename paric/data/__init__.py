"""Datasets: the synthetic benchmark generator, the Waterbirds-format reader every stage uses, and
the native formats (paric.data.formats: Waterbirds, Food-101, COCO gender) indexed into that layout."""
from paric.data.dataset import CaptionCorpus, DatasetError, WaterbirdsDataset, load_image
from paric.data.synthetic import build_caption_table, build_metadata, generate_benchmark

__all__ = [
    "CaptionCorpus",
    "DatasetError",
    "WaterbirdsDataset",
    "build_caption_table",
    "build_metadata",
    "generate_benchmark",
    "load_image",
]
