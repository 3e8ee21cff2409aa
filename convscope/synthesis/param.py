"""Image parametrisations for feature visualisation: pixels or a Fourier spectrum.

Every parametrisation holds one learnable tensor for a batch of ``n`` images and, when
called, returns the images as (n, C, H, W) values in 0..1 (the scale of
`convscope.data.preprocess.normalize` before the mean/std step). As in lucent
(``lucent.optvis.param``, Olah et al. 2017), the raw tensor ``t`` is optionally mapped
through a fixed colour-decorrelation matrix (3 channels only) and then through a sigmoid,
so any value of the parameter is a valid image and ``t = 0`` is mid grey.

- `PixelImage`: ``t`` is the (n, C, H, W) tensor itself (Simonyan et al. 2013, with the
  Yosinski et al. 2015 regularisers of `convscope.synthesis.transforms` acting on it).
- `FourierImage`: ``t`` is the inverse real FFT of a learnable spectrum scaled by
  1 / frequency, which whitens the gradient (large structures move as fast as small).

Written by hand after lucent (not a dependency: lucent pins old torch versions).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["COLOR_CORRELATION", "decorrelate_colour", "correlate_colour", "spectrum_scale",
           "PixelImage", "FourierImage", "make_param"]

#: Square root of the colour covariance of ImageNet images (lucent's matrix), columns
#: normalised to unit maximum norm: decorrelated -> RGB is ``rgb = t @ COLOR_CORRELATION.T``.
_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                     dtype=np.float32)
COLOR_CORRELATION = _SVD_SQRT / np.max(np.linalg.norm(_SVD_SQRT, axis=0))

#: lucent's constant that keeps the Fourier image's values small at the start.
_FOURIER_DIVISOR = 4.0


def decorrelate_colour(t: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) decorrelated colour -> (n, 3, H, W) RGB (before the sigmoid)."""
    matrix = torch.as_tensor(COLOR_CORRELATION, dtype=t.dtype, device=t.device)
    return torch.einsum("nchw,rc->nrhw", t, matrix)


def correlate_colour(rgb: torch.Tensor) -> torch.Tensor:
    """The inverse of `decorrelate_colour`: (n, 3, H, W) RGB -> decorrelated colour."""
    inverse = torch.as_tensor(np.linalg.inv(COLOR_CORRELATION), dtype=rgb.dtype,
                              device=rgb.device)
    return torch.einsum("nchw,rc->nrhw", rgb, inverse)


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """(H, W // 2 + 1) float32 scale 1 / max(f, 1 / max(H, W)) ** decay of each rfft2 bin.

    ``f`` is the bin's frequency in cycles per pixel (``sqrt(fy^2 + fx^2)``).
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freqs = np.sqrt(fy * fy + fx * fx)
    return (1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power).astype(np.float32)


class _Param(nn.Module):
    """Shared tail of the parametrisations: optional colour decorrelation, then a sigmoid."""

    def __init__(self, decorrelate: bool, channels: int):
        super().__init__()
        self.decorrelate = bool(decorrelate) and channels == 3

    def raw(self) -> torch.Tensor:
        """(n, C, H, W) unbounded tensor before colour and sigmoid."""
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        """(n, C, H, W) images in 0..1."""
        t = self.raw()
        if self.decorrelate:
            t = decorrelate_colour(t)
        return torch.sigmoid(t)


class PixelImage(_Param):
    """Pixels as parameters: ``pixels`` (n, C, H, W), initialised ~ N(0, sd^2)."""

    def __init__(self, n: int, channels: int, height: int, width: int, *, decorrelate: bool,
                 generator: torch.Generator, sd: float = 0.01):
        super().__init__(decorrelate, channels)
        init = torch.randn(n, channels, height, width, generator=generator) * sd
        self.pixels = nn.Parameter(init)

    def raw(self) -> torch.Tensor:
        return self.pixels


class FourierImage(_Param):
    """A learnable rfft2 spectrum ``spectrum`` (n, C, H, W // 2 + 1, 2) (real, imaginary).

    ``raw() = irfft2(spectrum * spectrum_scale, norm="ortho") / 4`` cropped to (H, W).
    """

    def __init__(self, n: int, channels: int, height: int, width: int, *, decorrelate: bool,
                 generator: torch.Generator, sd: float = 0.01, decay_power: float = 1.0):
        super().__init__(decorrelate, channels)
        self.size = (height, width)
        self.register_buffer("scale", torch.from_numpy(spectrum_scale(height, width,
                                                                      decay_power)))
        init = torch.randn(n, channels, height, width // 2 + 1, 2, generator=generator) * sd
        self.spectrum = nn.Parameter(init)

    def raw(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return image / _FOURIER_DIVISOR

    @torch.no_grad()
    def set_raw(self, raw: torch.Tensor) -> None:
        """Set the spectrum so that `raw` returns ``raw`` (n, C, H, W) (its inverse)."""
        spectrum = torch.fft.rfft2(raw * _FOURIER_DIVISOR, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spectrum))


def make_param(kind: str, n: int, channels: int, height: int, width: int, *, decorrelate: bool,
               generator: torch.Generator) -> _Param:
    """``kind`` ``pixels`` or ``fourier``: a parametrisation of ``n`` images of (C, H, W)."""
    classes = {"pixels": PixelImage, "fourier": FourierImage}
    if kind not in classes:
        raise ValueError(f"synthesis parametrisation {kind!r} is unknown; valid: pixels, fourier")
    return classes[kind](n, channels, height, width, decorrelate=decorrelate,
                         generator=generator)
