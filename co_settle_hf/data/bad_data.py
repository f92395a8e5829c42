"""The trainer's rule for unreadable samples: skip them, but stop if an epoch has too many."""

from __future__ import annotations


class BadDataError(RuntimeError):
    """Too many samples of an epoch could not be read."""


def check_bad_fraction(num_bad: int, num_total: int, limit: float = 0.05) -> None:
    """Raise BadDataError when more than ``limit`` of ``num_total`` samples were bad.

    A few broken videos in a large crawl are normal and are skipped; a high share usually
    means a wrong path, codec or column, and training on the rest would be silently biased.
    """
    if num_total < 1:
        raise ValueError(f"num_total must be >= 1, got {num_total}")
    if not 0 <= num_bad <= num_total:
        raise ValueError(f"num_bad must be in [0, num_total={num_total}], got {num_bad}")
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"limit must be in [0, 1], got {limit}")
    if num_bad > limit * num_total:
        raise BadDataError(
            f"{num_bad} of {num_total} samples ({100 * num_bad / num_total:.1f}%) could not be read this "
            f"epoch, more than the {100 * limit:g}% allowed; the logged warnings name the files"
        )


class BadSampleTracker:
    """Counts bad and total samples over one epoch and applies ``check_bad_fraction``.

    Feed it what ``collate_pairs`` reports for every batch. With ``epoch_size`` known (a
    map-style dataset) it fails as soon as the limit can no longer be met, instead of at the
    end of the epoch. Counts are per process: under distributed training, sum them across
    processes (e.g. ``accelerator.reduce``) before calling ``check_bad_fraction`` yourself.
    """

    def __init__(self, limit: float = 0.05, epoch_size: int | None = None) -> None:
        if not 0.0 <= limit <= 1.0:
            raise ValueError(f"limit must be in [0, 1], got {limit}")
        self.limit, self.epoch_size = limit, epoch_size
        self.num_bad = self.num_total = 0

    def update(self, num_bad: int, num_samples: int) -> None:
        """Record a batch of ``num_samples`` requested samples, ``num_bad`` of them unreadable."""
        if not 0 <= num_bad <= num_samples:
            raise ValueError(f"num_bad must be in [0, num_samples={num_samples}], got {num_bad}")
        self.num_bad += num_bad
        self.num_total += num_samples
        if self.epoch_size is not None and self.num_bad > self.limit * self.epoch_size:
            check_bad_fraction(self.num_bad, max(self.epoch_size, self.num_total), self.limit)

    def end_epoch(self) -> None:
        """Check the finished epoch, then reset the counts for the next one."""
        num_bad, num_total = self.num_bad, self.num_total
        self.num_bad = self.num_total = 0
        if num_total:
            check_bad_fraction(num_bad, num_total, self.limit)
