"""Co-Settle patch features for every frame of a video.

    python examples/features_from_video.py --adapter your-name/co-settle-dinov2-small --video clip.mp4
"""

import argparse

import torch

from co_settle_hf import CoSettleModel
from co_settle_hf.data import VideoFileClip
from co_settle_hf.evaluation.features import extract_video_features

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--adapter", required=True, help="adapter folder or Hub id (its backbone is loaded too)")
parser.add_argument("--video", required=True)
parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
parser.add_argument("--output", default="features.pt")
args = parser.parse_args()

model = CoSettleModel.from_pretrained(args.adapter)
clip = VideoFileClip(args.video)
frames = clip.read(range(clip.num_frames))  # uint8 (T, H, W, 3)
features = extract_video_features(model, frames, size=tuple(args.size))  # (T, h, w, D), L2-normalised
torch.save(features, args.output)
print(f"{clip.num_frames} frames -> features {tuple(features.shape)} saved to {args.output}")
