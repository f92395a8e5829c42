"""Clips decoded from video files (or their bytes) with PyAV, reading only the frames asked for."""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import av
import numpy as np
import torch

from .base import ClipReadError, check_indices


@dataclass(frozen=True)
class VideoInfo:
    """What a clip needs from the container header to map frame indices to timestamps."""

    native_frames: int
    rate: Fraction  # native frames per second
    time_base: Fraction  # seconds per pts tick
    start_pts: int

    @property
    def duration(self) -> float:
        return float(self.native_frames / self.rate)


class VideoFileClip:
    """One video (mp4, avi, webm, mkv, mov, ...) as a clip, from a path, a URL or bytes.

    Length: the stream's frame count when the container records it (mp4, mov, avi), else
    ``round(duration * average_rate)`` with the stream's, then the container's, duration
    (mkv, webm). Frame ``i`` is the frame displayed at ``i / fps`` seconds after the stream
    starts, where ``fps`` is the native average rate, or ``sample_fps`` when given (then the
    clip behaves like frames extracted at that rate, e.g. Kinetics at 2 fps, and
    ``num_frames = max(1, floor(duration * sample_fps))``).

    ``read`` seeks to the keyframe at or before each requested timestamp and decodes forward
    to the first frame within half a native frame period of it: it decodes from the previous
    keyframe, not from the start of the file. ``decoded_frames`` counts the frames this
    object has decoded (for tests and benchmarks). One decoder thread by default: these short
    seek-and-decode runs lose more to thread start-up than they gain (about 13 vs 20 ms a
    pair at 320x240 H.264), and DataLoader workers give the parallelism. The container is
    opened per call, so the object pickles to DataLoader workers and holds no file handle
    between reads. Paths with ``://`` open through fsspec (``hf://``, ``s3://``, ...), which
    reads only the byte ranges PyAV asks for.
    """

    def __init__(
        self,
        source: str | Path | bytes | bytearray | memoryview | io.BytesIO,
        name: str | None = None,
        sample_fps: float | None = None,
        decoder_threads: int = 1,
    ) -> None:
        if isinstance(source, io.BytesIO):
            source = source.getvalue()
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._data: bytes | None = bytes(source)
            self._path: str | None = None
            default_name = f"<video bytes, {len(self._data)} B>"
        elif isinstance(source, (str, Path)):
            self._data, self._path = None, str(source)
            default_name = self._path
        else:
            raise TypeError(f"video source must be a path, URL or bytes, got {type(source).__name__}")
        if sample_fps is not None and not sample_fps > 0:
            raise ValueError(f"sample_fps must be positive, got {sample_fps}")
        if decoder_threads < 0:
            raise ValueError(f"decoder_threads must be >= 0 (0 = FFmpeg's choice), got {decoder_threads}")
        self.name = name if name is not None else default_name
        self.sample_fps = sample_fps
        self.decoder_threads = decoder_threads
        self.decoded_frames = 0
        self._info: VideoInfo | None = None

    @contextlib.contextmanager
    def _opened(self) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
        """Open the container; any decoder or I/O failure becomes a ClipReadError naming the clip."""
        try:
            with contextlib.ExitStack() as stack:
                if self._data is not None:
                    handle: object = io.BytesIO(self._data)
                elif "://" in self._path:
                    import fsspec  # a dependency of datasets; only needed for remote files

                    handle = stack.enter_context(fsspec.open(self._path, "rb"))
                else:
                    handle = self._path
                container = stack.enter_context(av.open(handle, mode="r"))
                if not container.streams.video:
                    raise ClipReadError(f"{self.name}: no video stream")
                stream = container.streams.video[0]
                stream.codec_context.thread_count = self.decoder_threads
                yield container, stream
        except (av.error.FFmpegError, OSError, EOFError) as err:
            raise ClipReadError(f"cannot decode video {self.name}: {err}") from err

    @staticmethod
    def _probe(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            raise ClipReadError("no frame rate in the stream header")
        frames = stream.frames
        if frames <= 0:
            if stream.duration:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
            frames = round(seconds * rate)
        if frames <= 0:
            raise ClipReadError("no video frames (empty stream or unknown length)")
        return VideoInfo(frames, Fraction(rate), Fraction(stream.time_base), stream.start_time or 0)

    def _ensure_info(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
        if self._info is None:
            try:
                self._info = self._probe(container, stream)
            except ClipReadError as err:
                raise ClipReadError(f"{self.name}: {err}") from None
        return self._info

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            with self._opened() as (container, stream):
                self._ensure_info(container, stream)
        return self._info

    @property
    def fps(self) -> float:
        """Frame indices per second: ``sample_fps`` or the native average rate."""
        return float(self.sample_fps) if self.sample_fps is not None else float(self.info.rate)

    @property
    def duration(self) -> float:
        """Seconds covered by the stream's frames."""
        return self.info.duration

    @property
    def num_frames(self) -> int:
        info = self.info
        if self.sample_fps is None:
            return info.native_frames
        return max(1, math.floor(info.duration * self.sample_fps + 1e-9))

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        checked = check_indices(indices, self.num_frames, self.name)
        frames: dict[int, np.ndarray] = {}
        with self._opened() as (container, stream):
            info = self._ensure_info(container, stream)
            # Targets behind the same keyframe are decoded in one forward pass (the two frames of
            # a training pair often are): finding a target's keyframe costs a seek, not a decode.
            groups: dict[int, list[int]] = {}
            for index in sorted(set(checked)):
                groups.setdefault(self._keyframe_pts(container, stream, info, index / self.fps), []).append(index)
            for group in groups.values():
                frames.update(zip(group, self._frames_at(container, stream, info, [i / self.fps for i in group])))
        shapes = {array.shape for array in frames.values()}
        if len(shapes) > 1:
            raise ClipReadError(f"{self.name}: frame size changes within the video: {sorted(shapes)}")
        return torch.from_numpy(np.stack([frames[i] for i in checked]))

    def decode_small(self, size: int = 32) -> tuple[torch.Tensor, list[float]]:
        """Every native frame in order at `size` x `size` (uint8 (T, size, size, 3)) and its time in seconds.

        For shot-change detection over a whole video: 3 KiB a frame at the default size.
        """
        frames, times = [], []
        with self._opened() as (container, stream):
            info = self._ensure_info(container, stream)
            start = float(info.start_pts * info.time_base)
            for frame in container.decode(stream):
                self.decoded_frames += 1
                frames.append(frame.to_ndarray(format="rgb24", width=size, height=size))
                times.append(float(frame.pts * frame.time_base) - start if frame.pts is not None else len(times) / float(info.rate))
        if not frames:
            raise ClipReadError(f"{self.name}: no frames decoded")
        return torch.from_numpy(np.stack(frames)), times

    @staticmethod
    def _keyframe_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream, info: VideoInfo, seconds: float) -> int:
        """Pts of the keyframe a seek to ``seconds`` lands on (the first packet after the seek)."""
        container.seek(info.start_pts + round(Fraction(seconds) / info.time_base), stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            if packet.pts is not None:
                return packet.pts
        return info.start_pts

    def _frames_at(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        info: VideoInfo,
        targets: list[float],
    ) -> list[np.ndarray]:
        """Seek to the keyframe before the first of ``targets`` (sorted seconds) and decode forward through all."""
        target_pts = info.start_pts + round(Fraction(targets[0]) / info.time_base)
        container.seek(target_pts, stream=stream, backward=True, any_frame=False)
        frames = self._decode_forward(container, stream, info, targets, accept_late=False)
        if frames is None:  # the demuxer landed after the target: decode from the start instead
            container.seek(info.start_pts, stream=stream, backward=True, any_frame=False)
            frames = self._decode_forward(container, stream, info, targets, accept_late=True)
        return frames

    def _decode_forward(
        self,
        container: av.container.InputContainer,
        stream: av.video.stream.VideoStream,
        info: VideoInfo,
        targets: list[float],
        accept_late: bool,
    ) -> list[np.ndarray] | None:
        period = 1.0 / float(info.rate)
        start = float(info.start_pts * info.time_base)
        found: list[np.ndarray] = []
        last, last_time = None, -math.inf
        for frame in container.decode(stream):
            self.decoded_frames += 1
            if frame.pts is None:
                raise ClipReadError(f"{self.name}: decoded frame has no timestamp")
            time = float(frame.pts * frame.time_base) - start
            if last is None and time > targets[0] + period / 2 and not accept_late:
                return None
            while len(found) < len(targets) and time >= targets[len(found)] - period / 2:
                found.append(frame.to_ndarray(format="rgb24"))
            if len(found) == len(targets):
                return found
            last, last_time = frame, time
        # End of stream: allow a header that over-counts by about one frame; anything more is truncation.
        seconds = targets[len(found)]
        if last is not None and targets[-1] - last_time <= 1.5 * period:
            return found + [last.to_ndarray(format="rgb24")] * (len(targets) - len(found))
        ended = "before its first frame" if last is None else f"at {last_time:.3f} s"
        raise ClipReadError(
            f"{self.name}: video ends {ended}, before the frame at {seconds:.3f} s "
            f"(header says {info.native_frames} frames; truncated file?)"
        )

    def __repr__(self) -> str:
        return f"VideoFileClip({self.name!r}, sample_fps={self.sample_fps})"


def write_video(
    path: str | Path,
    frames: np.ndarray | torch.Tensor,
    fps: int = 10,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    configure: Callable[[av.video.stream.VideoStream], None] | None = None,
) -> Path:
    """Encode uint8 RGB frames (T, H, W, 3) with PyAV; the container comes from the file suffix.

    ``codec`` None picks H.264 (libx264, crf 18) when this PyAV build has it, else MPEG-4 part 2.
    ``configure`` may set codec-context fields (keyframe interval, B-frames) before encoding.
    """
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {array.dtype} {array.shape}")
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        options = {"crf": "18", **(options or {})} if codec == "libx264" else options
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = array.shape[2], array.shape[1], pix_fmt
        if options:
            stream.options = options
        if configure is not None:
            configure(stream)
        for image in np.ascontiguousarray(array):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video_frames(
    path: str | Path,
    max_frames: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decode a short clip sequentially into a uint8 tensor (T, H, W, 3) in RGB.

    Keeps every ``stride``-th frame, at most ``max_frames`` of them; ``size`` = (height, width)
    rescales each kept frame in FFmpeg (area resampling). Meant for clips of a few hundred frames.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) with positive entries, got {size}")
    scale = {} if size is None else {"height": int(size[0]), "width": int(size[1]), "interpolation": "AREA"}
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % stride:
                continue
            frames.append(frame.to_ndarray(format="rgb24", **scale))
            if max_frames is not None and len(frames) == max_frames:
                break
    if not frames:
        raise ValueError(f"no video frames decoded from {path}")
    return torch.from_numpy(np.stack(frames))
