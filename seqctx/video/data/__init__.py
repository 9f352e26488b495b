"""Video data: sampling, decoding, datasets, transforms, the synthetic set and ``data check``.

The path: annotation -> dataset -> sampler (clips of frame indices) -> ``read_frames`` ->
transforms -> uint8 views ``(V, 3, T, H, W)`` -> DataLoader ``(B, V, 3, T, H, W)`` ->
:func:`normalize_clips` on the device -> model.
"""

from .datasets import (
    DATASET_TYPES,
    ON_ERROR,
    DatasetFormat,
    KineticsDataset,
    SomethingSomethingV1,
    SomethingSomethingV2,
    VideoDataset,
    VideoListDataset,
    build_dataset,
    collate_clips,
    detect_format,
    left_right_pairs,
)
from .decode import BACKENDS, Backend, VideoError, check_backend, installed_backends, open_video, read_frames
from .index import StringTable, VideoIndex, VideoRecord
from .sampling import Clips, build_sampler, sample_dense, sample_segments
from .shards import ShardDataset
from .synthetic import SynthConfig, generate_synthetic
from .transforms import build_transform, fold_views, normalize_clips

__all__ = [
    "BACKENDS",
    "Backend",
    "Clips",
    "DATASET_TYPES",
    "DatasetFormat",
    "ON_ERROR",
    "KineticsDataset",
    "SomethingSomethingV1",
    "ShardDataset",
    "SomethingSomethingV2",
    "SynthConfig",
    "VideoDataset",
    "VideoError",
    "VideoIndex",
    "StringTable",
    "VideoListDataset",
    "VideoRecord",
    "build_dataset",
    "build_sampler",
    "build_transform",
    "check_backend",
    "installed_backends",
    "fold_views",
    "normalize_clips",
    "collate_clips",
    "detect_format",
    "generate_synthetic",
    "left_right_pairs",
    "open_video",
    "read_frames",
    "sample_dense",
    "sample_segments",
]
