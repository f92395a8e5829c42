"""Propagate a first-frame mask through a video with an adapter (or a bare backbone) and write an mp4.

    python examples/propagate_mask.py --model your-name/co-settle-dinov2-small --video clip.mp4 \
        --mask first_frame.png --output propagated.mp4

The video goes through the benchmarks' own loop (`co_settle_hf.evaluation.loop`): only how to
read the first mask and what to do with the result are written here.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from co_settle_hf.data import VideoFileClip
from co_settle_hf.evaluation.encoders import load_for_evaluation
from co_settle_hf.evaluation.features import fit_to_patches
from co_settle_hf.evaluation.loop import run_propagation
from co_settle_hf.evaluation.plots import write_overlay_video
from co_settle_hf.evaluation.propagation import PROTOCOLS, labels_to_onehot, resize_ids, upsample_and_argmax


def read_mask(path: str) -> torch.Tensor:
    """Object ids (H, W): a palette / greyscale PNG as is; a colour mask gets one id per colour, black 0."""
    mask = Image.open(path)
    if mask.mode in ("P", "L", "I"):
        return torch.from_numpy(np.array(mask)).long()
    colours = np.array(mask.convert("RGB")).reshape(-1, 3)
    palette, inverse = np.unique(colours, axis=0, return_inverse=True)
    order = np.argsort(palette.sum(1), kind="stable")  # black (sum 0) first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ids = torch.from_numpy(rank[inverse.reshape(-1)].reshape(mask.height, mask.width)).long()
    return ids + 1 if palette[order[0]].sum() != 0 else ids  # no black pixel: every colour is an object


@dataclass
class Clip:
    """One mp4 as the loop's video: its file (the cache key), size, and all its frames."""

    path: Path

    def __post_init__(self):
        self.clip = VideoFileClip(self.path)
        self.name, self.frames, self.num_frames = self.clip.name, (self.path,), self.clip.num_frames
        self.decoded = self.clip.read(range(self.num_frames))
        self.frame_size = tuple(self.decoded.shape[1:3])

    def read_all(self) -> torch.Tensor:
        return self.decoded


@dataclass
class MaskTask:
    """Propagate one mask; the result is the mp4 of the overlays."""

    video: Clip
    mask: torch.Tensor
    size: tuple
    output: str
    name: str = "propagate"
    min_frames: int = 1

    def videos(self):
        return [self.video]

    def input_size(self, frame_size, patch_size):
        return fit_to_patches(self.size, patch_size)

    def first_labels(self, video, frame_size, size, grid):
        ids = resize_ids(self.mask, size)
        return labels_to_onehot(ids, int(ids.max()) + 1, size=grid), size

    def score(self, video, size, soft, settings, out, folder):
        masks = resize_ids(upsample_and_argmax(soft.cpu(), size, norm_mask=settings.norm_mask), video.frame_size)
        write_overlay_video(video.decoded, masks, self.output, fps=int(round(video.clip.fps)) or 10)
        return {"frames": video.num_frames, "objects": int(self.mask.max())}

    def summarise(self, rows, too_short, settings, out, folder):
        return rows[0]


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", required=True, help="adapter or backbone (path or Hub id)")
parser.add_argument("--video", required=True)
parser.add_argument("--mask", required=True, help="PNG of object ids for the first frame (0 = background)")
parser.add_argument("--size", type=int, nargs=2, default=(480, 880), metavar=("H", "W"))
parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cropmae")
parser.add_argument("--output", default="propagated.mp4")
args = parser.parse_args()

encoder = load_for_evaluation(args.model).encoder
task = MaskTask(Clip(Path(args.video)), read_mask(args.mask), tuple(args.size), args.output)
(result,), _ = run_propagation(task, encoder, [PROTOCOLS[args.protocol]], out=None, progress=True)
print(f"wrote {args.output}: {result['frames']} frames, {result['objects']} object(s)")
