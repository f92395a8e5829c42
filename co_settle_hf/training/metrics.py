"""Named training metrics, summed over micro-batches and processes with one collective each."""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any

import torch

from ..objective.loss import ObjectiveOutput

OBJECTIVE = tuple(f.name for f in fields(ObjectiveOutput))  # loss, cycle_loss, ..., cycle_identity_similarity


@dataclass
class StepMetrics:
    """Sums of the objective's scalars over micro-batches that had data, and the bad-data counts."""

    loss: float = 0.0
    cycle_loss: float = 0.0
    separability_loss: float = 0.0
    cycle_accuracy: float = 0.0
    cycle_identity_similarity: float = 0.0
    batches: float = 0.0  # micro-batches with data, the denominator of the means
    bad_samples: int = 0
    samples: int = 0

    @classmethod
    def gather(cls, accelerator: Any, out: ObjectiveOutput, has_data: bool, num_bad: int, batch_size: int) -> "StepMetrics":
        """One micro-batch's metrics, summed over every process in a single all-reduce."""
        values = torch.stack([getattr(out, name).detach().float() for name in OBJECTIVE])
        values = values if has_data else torch.zeros_like(values)  # an all-bad batch adds nothing
        local = torch.cat([values, values.new_tensor([float(has_data), num_bad, batch_size])])
        total = accelerator.reduce(local, "sum").tolist()
        return cls(*total[:-2], int(total[-2]), int(total[-1]))

    def __add__(self, other: "StepMetrics") -> "StepMetrics":
        return StepMetrics(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def means(self) -> dict[str, float]:
        return {name: getattr(self, name) / max(self.batches, 1.0) for name in OBJECTIVE}

    def is_finite(self) -> bool:
        return all(torch.isfinite(torch.tensor(astuple(self), dtype=torch.float64)).tolist())
