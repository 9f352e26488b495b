"""Video data: sampling, decoding, datasets, transforms, the synthetic set and ``data check``.

The path: annotation -> dataset -> sampler (indices) -> ``read_frames`` -> transforms ->
``(3, T, H, W)`` clip -> DataLoader -> model.
"""

from .datasets import (
    DATASET_TYPES,
    ON_ERROR,
    KineticsDataset,
    SomethingSomethingV1,
    SomethingSomethingV2,
    VideoDataset,
    VideoListDataset,
    VideoRecord,
    build_dataset,
    collate_clips,
    detect_format,
)
from .decode import BACKENDS, VideoError, open_video, read_frames
from .sampling import build_sampler, sample_dense, sample_segments
from .synthetic import SynthConfig, generate_synthetic
from .transforms import build_transform, normalize_clips

__all__ = [
    "BACKENDS",
    "DATASET_TYPES",
    "ON_ERROR",
    "KineticsDataset",
    "SomethingSomethingV1",
    "SomethingSomethingV2",
    "SynthConfig",
    "VideoDataset",
    "VideoError",
    "VideoListDataset",
    "VideoRecord",
    "build_dataset",
    "build_sampler",
    "build_transform",
    "normalize_clips",
    "collate_clips",
    "detect_format",
    "generate_synthetic",
    "open_video",
    "read_frames",
    "sample_dense",
    "sample_segments",
]
