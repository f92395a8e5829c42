"""Which two frames of a clip form a training pair (SPEC section 2, "Frame pairs")."""

from __future__ import annotations

import torch

from ..objective.settings import OBJECTIVE


def uniform_int(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high)."""
    return int(torch.randint(low, high, (1,), generator=generator))


def sample_pair_indices(
    num_frames: int,
    delta: float = OBJECTIVE.frame_gap,
    generator: torch.Generator | None = None,
    skip_first: bool = True,
) -> tuple[int, int]:
    """Draw 0-based frame indices ``(t1, t2)`` with ``t2 = t1 + int(delta * num_frames)``.

    Index convention: indices are 0-based, like the authors' loader that the SPEC restates, and
    t1 is uniform in ``[1, n - gap)``, so frame 0 is never the first frame of a pair (the
    released code draws from 1 because its four-frame variant also reads ``t1 - 1``; it produced
    the published numbers). ``skip_first=False`` draws from ``[0, n - gap)``, and so does the
    default when ``[1, n - gap)`` is empty (only for ``delta`` above about 0.5 on tiny clips).
    When ``gap < 1`` both indices are the same uniformly drawn frame. For video files the frame
    indices are at the clip's index rate, so the gap is ``delta`` of the clip's duration.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    gap = int(delta * num_frames)
    if gap < 1:
        frame = uniform_int(0, num_frames, generator)
        return frame, frame
    low = 1 if skip_first and num_frames - gap > 1 else 0
    t1 = uniform_int(low, num_frames - gap, generator)
    return t1, t1 + gap
