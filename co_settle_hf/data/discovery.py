"""Find clips on disk: frame-folder trees, video folders, single videos and list files."""

from __future__ import annotations

import os
from pathlib import Path

from .base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Clip
from .frames import FrameFolderClip, natural_key
from .video import VideoFileClip


def clip_from_path(path: str | Path, sample_fps: float | None = None) -> Clip:
    """A frame folder (any directory) or a video file (by extension) as a clip."""
    path = Path(path)
    if path.is_dir():
        return FrameFolderClip(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoFileClip(path, sample_fps=sample_fps)
    if not path.exists():
        raise FileNotFoundError(f"clip not found: {path}")
    raise ValueError(f"{path} is neither a frame folder nor a video file ({', '.join(sorted(VIDEO_EXTENSIONS))})")


def _walk(root: Path, sample_fps: float | None) -> list[Clip]:
    """Every folder that directly holds images is a clip, and so is every video file, at any depth.

    Symbolic links to folders are not followed (no cycles); the order is sorted, so stable.
    """
    clips: list[Clip] = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort(key=natural_key)
        files.sort(key=natural_key)
        images = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if images:
            clips.append(FrameFolderClip(directory, files=images))
        clips.extend(
            VideoFileClip(Path(directory) / f, sample_fps=sample_fps)
            for f in files
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS
        )
    return clips


def _read_list(list_file: Path, sample_fps: float | None) -> list[Clip]:
    """One frame-folder or video path per line; relative to the list's folder; '#' starts a comment line."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{list_file} is not a video, image folder or UTF-8 text list of clips") from err
    clips: list[Clip] = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = list_file.parent / path
        if not path.exists():
            raise FileNotFoundError(f"{list_file}, line {number}: clip not found: {path}")
        clips.append(clip_from_path(path, sample_fps=sample_fps))
    return clips


def discover_clips(source: str | Path, sample_fps: float | None = None) -> list[Clip]:
    """All clips under ``source``: a folder tree, a single video file or a text list of clips.

    ``sample_fps`` is passed to every video file (see ``VideoFileClip``). Raises
    FileNotFoundError for a missing source or list entry and ValueError when nothing is found.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"clip source not found: {source}")
    if source.is_dir():
        clips = _walk(source, sample_fps)
    elif source.suffix.lower() in VIDEO_EXTENSIONS:
        clips = [VideoFileClip(source, sample_fps=sample_fps)]
    elif source.suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(f"{source} is a single image, not a clip; pass the folder that holds the frames")
    else:
        clips = _read_list(source, sample_fps)
    if not clips:
        raise ValueError(
            f"no clips found in {source}: expected folders of {'/'.join(sorted(IMAGE_EXTENSIONS))} frames, "
            f"video files ({'/'.join(sorted(VIDEO_EXTENSIONS))}) or a list file naming them"
        )
    return clips
