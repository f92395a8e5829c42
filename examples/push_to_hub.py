"""Push a trained adapter to the Hub (the projection, its image processor and card; the backbone only if asked).

    hf auth login   # or set HF_TOKEN
    python examples/push_to_hub.py --adapter outputs/demo/adapter --repo-id your-name/co-settle-dinov2-s14
"""

import argparse

from co_settle_hf import CoSettleModel

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--adapter", required=True)
parser.add_argument("--repo-id", required=True)
parser.add_argument("--branch", default=None, help="push to this branch (created if needed)")
parser.add_argument("--private", action="store_true")
parser.add_argument("--push-backbone", action="store_true", help="also upload the backbone (needed when it exists only locally)")
args = parser.parse_args()

model = CoSettleModel.from_pretrained(args.adapter)
commit = model.push_to_hub(args.repo_id, revision=args.branch, private=args.private or None,
                           commit_message="Upload Co-Settle adapter", push_backbone=args.push_backbone or None)
print(f"pushed {args.adapter} to {args.repo_id} at commit {commit.oid}")
print(f"load it with: CoSettleModel.from_pretrained({args.repo_id!r}{f', revision={args.branch!r}' if args.branch else ''})")
