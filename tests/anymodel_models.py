"""Model shapes users bring that the demo CNN does not have, for tests/test_anymodel.py.

Each factory returns a small untrained network; the tests seed torch and save its
state dict as the run's weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def lenet(num_classes: int = 5) -> nn.Sequential:
    """A LeNet-style nn.Sequential for 28x28 grayscale images: numeric layer names, in-place
    ReLUs, BatchNorm, and a Flatten + Linear head that accepts only 28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),    # 0 1 2
        nn.MaxPool2d(2),                                                              # 3
        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(inplace=True),  # 4 5 6
        nn.MaxPool2d(2),                                                              # 7
        nn.Flatten(), nn.Linear(12 * 7 * 7, 16), nn.ReLU(inplace=True),              # 8 9 10
        nn.Linear(16, num_classes))                                                   # 11


class FunctionalNet(nn.Module):
    """ReLUs called as functions (no nn.ReLU modules); the output is a dict."""

    def __init__(self, num_classes: int = 5, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 8)
        return {"logits": self.fc(torch.flatten(x, 1)), "features": x}


class TupleNet(FunctionalNet):
    """As `FunctionalNet`, the output a (logits, features) tuple."""

    def forward(self, x):
        out = super().forward(x)
        return out["logits"], out["features"]


def functional_net(num_classes: int = 5, in_channels: int = 3) -> nn.Module:
    return FunctionalNet(num_classes, in_channels)


def tuple_net(num_classes: int = 5, in_channels: int = 3) -> nn.Module:
    return TupleNet(num_classes, in_channels)
