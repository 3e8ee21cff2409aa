"""Which epochs of the demo training are saved as checkpoints, and under which names.

Kept free of torch so that the workflow can call it while it parses the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["CHECKPOINT_PATTERN", "demo_checkpoint_epochs", "demo_checkpoint_paths"]

#: File of the weights after epoch ``epoch`` (1-based) of the demo training.
CHECKPOINT_PATTERN = "results/model/checkpoints/epoch-{epoch:03d}.pt"


def demo_checkpoint_epochs(train: Mapping) -> list[int]:
    """Sorted epochs after which the demo training saves its weights.

    ``train`` is the ``model.train`` section (a dict). ``checkpoint_epochs`` null gives
    epoch 1, ``ceil(epochs / 4)`` and ``ceil(epochs / 2)`` that come before the last epoch
    (the final weights are saved anyway); an epoch beyond ``epochs`` raises ValueError.
    """
    epochs = int(train["epochs"])
    requested = train.get("checkpoint_epochs")
    if requested is None:
        return sorted({e for e in (1, math.ceil(epochs / 4), math.ceil(epochs / 2)) if e < epochs})
    beyond = sorted(e for e in requested if int(e) > epochs)
    if beyond:
        raise ValueError(f"config key 'model.train.checkpoint_epochs': epochs {beyond} come after "
                         f"the last one (model.train.epochs is {epochs}); valid: 1..{epochs}")
    return sorted({int(e) for e in requested})


def demo_checkpoint_paths(train: Mapping) -> list[str]:
    """The checkpoint files of `demo_checkpoint_epochs`, in epoch order."""
    return [CHECKPOINT_PATTERN.format(epoch=e) for e in demo_checkpoint_epochs(train)]
