"""`accelerate launch -m co_settle_hf.evaluate {davis,jhmdb,vip,tapvid,retrieval,tradeoff} ...`: see `co_settle_hf.evaluation.cli`.

The same command as `co-settle eval`; under Accelerate the videos are shared among the processes.
"""

import sys

from .cli import run

if __name__ == "__main__":
    run("eval", sys.argv[1:])
