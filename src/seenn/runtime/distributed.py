"""Multi-process training with PyTorch's own engine: ``torchrun --nproc_per_node N -m seenn train ...``.

- gloo on CPU, nccl on CUDA; torchrun's usual flags (``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``) give
  multi-node runs.
- Same global batch as one process: every rank draws the same shuffled (and augmented) global batch and keeps
  its shard ``[rank::world]``; the loss is weighted so that DDP's gradient average equals the gradient of the
  global-batch loss.
- Batch norm is synchronised across ranks (:class:`DistBatchNorm2d`: PyTorch's SyncBatchNorm needs a GPU), so the
  statistics are those of the global batch.
- Only rank 0 validates and writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (dist.is_available() and dist.is_initialized()):
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if str(device).startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch across all ranks (differentiable)."""

    def forward(self, x):
        rank, size = world()
        if not self.training or size == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3)
        n_local = torch.tensor([float(x.shape[0] * x.shape[2] * x.shape[3])], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), n_local])
        stats = all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm2d in ``model`` a :class:`DistBatchNorm2d` (same parameters and buffers)."""
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = DistBatchNorm2d
    return model


def plain_batchnorm(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if type(m) is DistBatchNorm2d:
            m.__class__ = nn.BatchNorm2d
    return model


def all_sum(values: list[float]) -> list[float]:
    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


_state = {"left": False}


def finish() -> None:
    """Leave the process group together (a barrier first: no rank tears down while another still works)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _state["left"] = True


def left_group() -> bool:
    """Whether this process took part in a process group. Such a process should end with os._exit once its work
    is flushed: the interpreter's own teardown can hit std::terminate in the communication threads (seen as
    SIGABRT after a run had finished and written everything), which would fail the whole torchrun job."""
    return _state["left"]
