"""Run a batch through the model, halving the batch size on out-of-memory down to 1.

The batch size a `BatchBackoff` reached stays for the following batches (a
shard's images are alike, so the next batch would run out of memory too).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["is_out_of_memory", "BatchBackoff"]


def is_out_of_memory(exc: BaseException, cuda: bool) -> bool:
    """A CUDA out-of-memory error (on a CUDA run, also one raised as a plain RuntimeError
    whose message says "out of memory")."""
    return (isinstance(exc, torch.cuda.OutOfMemoryError)
            or (cuda and isinstance(exc, RuntimeError) and "out of memory" in str(exc)))


class BatchBackoff:
    """Apply a step to a batch in pieces of at most ``batch_size`` images.

    On out-of-memory the batch size is halved and the whole batch is run again,
    down to 1; out-of-memory at 1 and every other error propagate unchanged.
    ``report`` is called with a message each time the size is lowered.
    """

    def __init__(self, batch_size: int, *, cuda: bool = False,
                 report: Callable[[str], None] = lambda msg: print(msg, flush=True)):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.cuda = cuda
        self.report = report

    def run(self, step: Callable[[torch.Tensor], dict[str, torch.Tensor]],
            images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``step`` over ``images`` (N, ...) in pieces; the pieces' results (dicts of (n, ...)
        tensors) concatenated along the first axis."""
        while True:
            try:
                return self._run_pieces(step, images)
            except RuntimeError as exc:
                if not is_out_of_memory(exc, self.cuda) or self.batch_size == 1:
                    raise
            self._lower()

    def _run_pieces(self, step, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = self.batch_size
        parts = [step(images[i:i + size]) for i in range(0, len(images), size)]
        if len(parts) == 1:
            return parts[0]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def _lower(self) -> None:
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        lowered = max(1, self.batch_size // 2)
        self.report(f"out of GPU memory at batch size {self.batch_size}: lowering the batch "
                    f"size to {lowered}")
        self.batch_size = lowered
