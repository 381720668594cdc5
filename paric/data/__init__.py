"""Datasets: the embedded synthetic benchmark generator and the Waterbirds-format reader."""
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
