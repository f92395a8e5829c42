"""`accelerate launch -m co_settle_hf.train ...`: see `co_settle_hf.training.trainer`."""

from .training.trainer import main

if __name__ == "__main__":
    main()
