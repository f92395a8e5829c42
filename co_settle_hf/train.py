"""`accelerate launch -m co_settle_hf.train ...`: see `co_settle_hf.training.trainer`."""

import sys

from .cli import run

if __name__ == "__main__":
    run("train", sys.argv[1:])
