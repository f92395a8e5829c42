"""Evaluation across processes: shard by video, gather per-video results on every process.

Written once for every benchmark. Under ``accelerate launch`` each process takes whole videos
(propagation of a video never leaves its process); without a launcher there is one process and
everything here is a no-op. Videos are split into :data:`NUM_BLOCKS` contiguous blocks dealt to
the processes in turn, and results are put back in video order, so any sum over videos runs in
the same order, block by block, whatever the number of processes: the files are identical.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

#: Contiguous blocks of videos; a fixed number, so the summation order never depends on the processes.
NUM_BLOCKS = 32


def blocks(num_items: int) -> list[range]:
    """``range(num_items)`` cut into at most NUM_BLOCKS contiguous, near-equal blocks."""
    count = min(NUM_BLOCKS, num_items)
    bounds = [num_items * b // count for b in range(count + 1)] if count else [0]
    return [range(bounds[b], bounds[b + 1]) for b in range(count)]


class Processes:
    """This process's place among the evaluation processes (one, unless launched by Accelerate)."""

    def __init__(self, cpu: bool = False):
        self.state = PartialState(cpu=cpu)

    @property
    def rank(self) -> int:
        return self.state.process_index

    @property
    def world(self) -> int:
        return self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.state.is_main_process

    @property
    def device(self) -> torch.device:
        return self.state.device

    def my_blocks(self, num_items: int) -> list[range]:
        """The blocks of videos this process evaluates."""
        return [block for b, block in enumerate(blocks(num_items)) if b % self.world == self.rank]

    def gather(self, items: Sequence[Any]) -> list[Any]:
        """Every process's ``items`` (picklable), concatenated in process order, on every process."""
        if self.world == 1:
            return list(items)
        return gather_object(list(items))

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value`` on every process."""
        if self.world == 1:
            return value
        return broadcast_object_list([value])[0]

    def barrier(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()


@lru_cache(maxsize=2)
def current_processes(cpu: bool = False) -> Processes:
    """The processes of this run (created once: Accelerate's state is a process-wide singleton)."""
    return Processes(cpu)
