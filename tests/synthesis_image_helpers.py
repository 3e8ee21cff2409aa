"""Tiny models and data shared by the synthesis tests (seconds on a CPU)."""

from __future__ import annotations

import torch
from torch import nn

from convscope.data.preprocess import as_preprocess_config
from convscope.synthesis.images import PixelModel

PREPROCESS = as_preprocess_config({"input_size": 12, "channels": 3, "resize": None,
                                   "crop": "center", "mean": [0.5, 0.4, 0.3],
                                   "std": [0.25, 0.2, 0.3]})


class TinyCNN(nn.Module):
    """conv(3->8) - relu - conv(8->8) - relu - mean pool - fc(8 -> classes)."""

    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def random_pixel_model(seed: int = 0) -> PixelModel:
    """An untrained `TinyCNN` (seeded) as a `PixelModel`."""
    torch.manual_seed(seed)
    return PixelModel(TinyCNN(), PREPROCESS).eval()


def colour_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 12, 12) pixels in 0.2..0.8 whose class is the brightest channel, and the labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    pixels = 0.2 + 0.3 * torch.rand(n, 3, 12, 12, generator=generator)
    pixels[torch.arange(n), labels] += 0.3
    return pixels, labels


def trained_pixel_model() -> PixelModel:
    """A `TinyCNN` trained on `colour_images` to near 100% (a second or two)."""
    model = random_pixel_model(1)
    pixels, labels = colour_images(96)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(pixels), labels).backward()
        optimiser.step()
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
