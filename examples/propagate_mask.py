"""Propagate a first-frame mask through a video with an adapter (or a bare backbone) and write an mp4.

    python examples/propagate_mask.py --model your-name/co-settle-dinov2-small --video clip.mp4 \
        --mask first_frame.png --output propagated.mp4
"""

import argparse

import numpy as np
import torch
from PIL import Image

from co_settle_hf.data import VideoFileClip
from co_settle_hf.evaluation.encoders import load_for_evaluation
from co_settle_hf.evaluation.features import extract_video_features, fit_to_patches
from co_settle_hf.evaluation.plots import write_overlay_video
from co_settle_hf.evaluation.propagation import (
    labels_to_onehot,
    propagate_labels,
    resize_ids,
    upsample_and_argmax,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", required=True, help="adapter or backbone (path or Hub id)")
parser.add_argument("--video", required=True)
parser.add_argument("--mask", required=True, help="PNG of object ids for the first frame (0 = background)")
parser.add_argument("--size", type=int, nargs=2, default=(480, 880), metavar=("H", "W"))
parser.add_argument("--output", default="propagated.mp4")
args = parser.parse_args()

encoder = load_for_evaluation(args.model).encoder
clip = VideoFileClip(args.video)
frames = clip.read(range(clip.num_frames))
size = fit_to_patches(tuple(args.size), encoder.patch_size)
features = extract_video_features(encoder, frames, size=size)
mask = Image.open(args.mask)
if mask.mode in ("P", "L", "I"):
    ids = torch.from_numpy(np.array(mask)).long()
else:  # a colour mask: one id per colour, black is the background
    colours = np.array(mask.convert("RGB")).reshape(-1, 3)
    palette, inverse = np.unique(colours, axis=0, return_inverse=True)
    order = np.argsort(palette.sum(1), kind="stable")  # black (sum 0) first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ids = torch.from_numpy(rank[inverse.reshape(-1)].reshape(mask.height, mask.width)).long()
    if palette[order[0]].sum() != 0:
        ids += 1  # no black pixel: every colour is an object
ids = resize_ids(ids, size)
first = labels_to_onehot(ids, int(ids.max()) + 1, size=tuple(features.shape[1:3]))
soft = propagate_labels(features, first.to(features.device), progress=True)
masks = upsample_and_argmax(soft.cpu(), size)
masks = resize_ids(masks, tuple(frames.shape[1:3]))
write_overlay_video(frames, masks, args.output, fps=int(round(clip.fps)) or 10)
print(f"wrote {args.output}: {len(frames)} frames, {int(ids.max())} object(s)")
