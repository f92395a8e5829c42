"""Video data for Co-Settle training: clips, frame-pair sampling, pair augmentation, datasets."""

from .bad_data import BadDataError, check_bad_fraction
from .base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Clip, ClipReadError
from .discovery import clip_from_path, discover_clips
from .frames import FrameFolderClip
from .hf_datasets import DatasetClips, StreamingClips, clips_from_dataset, dataset_clips
from .pairs import (
    FramePairDataset,
    IterableFramePairDataset,
    collate_pairs,
    sample_generator,
)
from .sampling import sample_pair_indices
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PairTransform,
    random_resized_crop_params,
)
from .video import VideoFileClip, VideoInfo, read_video_frames
from .windows import ClipWindow, find_cuts, split_long_videos, window_bounds

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "BadDataError",
    "Clip",
    "ClipWindow",
    "ClipReadError",
    "DatasetClips",
    "FrameFolderClip",
    "FramePairDataset",
    "IterableFramePairDataset",
    "PairTransform",
    "StreamingClips",
    "VideoFileClip",
    "VideoInfo",
    "check_bad_fraction",
    "clip_from_path",
    "clips_from_dataset",
    "collate_pairs",
    "dataset_clips",
    "discover_clips",
    "find_cuts",
    "random_resized_crop_params",
    "read_video_frames",
    "sample_generator",
    "sample_pair_indices",
    "split_long_videos",
    "window_bounds",
]
