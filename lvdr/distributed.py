"""Data-parallel training under ``torchrun``: one process per GPU (NCCL) or per CPU core group (gloo).

The config's ``batch_size`` is the global batch, whatever the number of processes. Every process draws
the whole step's randomness (which examples, noise, timesteps) exactly as a single process would, from
the same (seed, step), and computes only its share of the batch; DistributedDataParallel averages the
gradients. Losses that are means over the batch are taken over the global batch (``batch_mean`` inside
``global_batch``), so class-weighted and ragged losses equal the single-process ones and two processes
follow one process's loss curve to float rounding. Dropout masks are the one draw that is made per
process: the same distribution, other values. Rank 0 alone validates, logs, writes checkpoints and
outputs, in the single-process format (the unwrapped model's weights), so a model trained on N GPUs
loads in one CPU process.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.distributed as dist

from lvdr.errors import ConfigError

log = logging.getLogger(__name__)

_SHARED_BATCH = False  # inside ``global_batch``: batch means are over every process's share


def world_size() -> int:
    """Processes in this launch (torchrun's WORLD_SIZE; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


class Parallel:
    """This process's place in a torchrun launch; a launch of one process is plain single-process training."""

    def __init__(self, device: torch.device):
        self.world, self.rank = world_size(), rank()
        self.device = device
        if self.world > 1:
            if device.type == "cuda":  # one GPU per process
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            log.info("data-parallel: process %d of %d on %s (%s)", self.rank, self.world, self.device,
                     dist.get_backend())

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, logs and writes."""
        return self.rank == 0

    def share(self, batch_size: int, key: str) -> slice:
        """This process's contiguous share of a global batch of ``batch_size``."""
        if batch_size % self.world:
            raise ConfigError(f"config key '{key}': a batch of {batch_size} does not split evenly over "
                              f"{self.world} processes; make it a multiple of {self.world}")
        size = batch_size // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model DistributedDataParallel trains (the model itself in a single process)."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def average(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over processes of each value (a loss each process computed on its share)."""
        if self.world == 1:
            return values
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(tensor)
        return dict(zip(keys, (tensor / self.world).tolist()))

    def from_main(self, compute):
        """``compute()`` run on rank 0 and its (picklable) result handed to every process, so that decisions
        taken on validation (the best checkpoint, early stopping) are the same everywhere."""
        if self.world == 1:
            return compute()
        box = [compute() if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self._comm_device)
        return box[0]

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Leave the process group (after the last collective: rank 0 may still be writing outputs)."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def global_batch(active: bool = True):
    """Within it, ``batch_mean`` averages over the global batch that the processes share."""
    global _SHARED_BATCH
    before, _SHARED_BATCH = _SHARED_BATCH, active and dist.is_available() and dist.is_initialized() and world_size() > 1
    try:
        yield
    finally:
        _SHARED_BATCH = before


def batch_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, two sums over the batch. Inside ``global_batch`` both are this process's
    partial sums: the denominator is summed over processes and the result scaled by their number, so that
    DDP's average of the processes' gradients is the gradient of the global ratio, and the average of the
    processes' values its value."""
    if not _SHARED_BATCH:  # an empty batch (0 / 0) gives 0: its numerator is 0 too
        return numerator / denominator.clamp_min(1e-12)
    total = denominator.detach().clone()
    dist.all_reduce(total)
    return numerator * dist.get_world_size() / total.clamp_min(1e-12)


def batch_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The (weighted) mean of per-example values over the batch (the global batch inside ``global_batch``)."""
    if weights is None:
        return batch_ratio(values.sum(), values.new_tensor(float(values.numel())))
    return batch_ratio((values * weights).sum(), weights.sum())
