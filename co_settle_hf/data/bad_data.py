"""The trainer's rule for unreadable samples: skip them, but stop if an epoch has too many."""

from __future__ import annotations

from ..errors import CoSettleError


class BadDataError(CoSettleError, RuntimeError):
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
