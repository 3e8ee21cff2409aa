"""Noisy linear imputation of removed pixels (ROAD, Rong et al. 2022), by hand.

A removed pixel takes the weighted mean of its 8 neighbours (weight 1/6 for the
4 that share an edge, 1/12 for the diagonals; neighbours outside the image are
left out), for every removed pixel at once: one sparse linear system per image
(its channels are right-hand sides), solved with SciPy. Gaussian noise of
standard deviation ``noise`` is added to the imputed values, so that the
removed region cannot be told from its imputation's smoothness alone.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

__all__ = ["NEIGHBOURS", "noisy_linear_impute"]

#: (dy, dx, weight) of the 8 neighbours.
NEIGHBOURS = tuple((dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def noisy_linear_impute(image: np.ndarray, mask: np.ndarray, noise: float,
                        rng: np.random.Generator) -> np.ndarray:
    """(C, H, W) ``image`` with the pixels where ``mask`` (H, W) is true imputed.

    Raises ValueError when every pixel is masked (nothing to impute from).
    """
    c, h, w = image.shape
    unknown = np.flatnonzero(mask)
    if len(unknown) == 0:
        return image.copy()
    if len(unknown) == h * w:
        raise ValueError("ROAD: every pixel is removed, nothing to impute from; use fractions < 1")
    slot = np.full(h * w, -1)
    slot[unknown] = np.arange(len(unknown))
    ys, xs = np.divmod(unknown, w)
    flat = image.reshape(c, h * w).astype(np.float64)
    rows, cols, vals = [], [], []
    diagonal = np.zeros(len(unknown))
    rhs = np.zeros((len(unknown), c))
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        rows_in = np.flatnonzero(inside)
        neighbour = ny[inside] * w + nx[inside]
        diagonal[rows_in] += weight
        known = slot[neighbour] < 0
        rhs[rows_in[known]] += weight * flat[:, neighbour[known]].T
        rows.append(rows_in[~known])
        cols.append(slot[neighbour[~known]])
        vals.append(np.full((~known).sum(), -weight))
    rows.append(np.arange(len(unknown)))
    cols.append(np.arange(len(unknown)))
    vals.append(diagonal)
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(unknown), len(unknown))).tocsc()
    solved = spsolve(system, rhs).reshape(len(unknown), c)
    out = flat.copy()
    out[:, unknown] = solved.T + rng.normal(0.0, noise, size=(c, len(unknown)))
    return out.reshape(c, h, w).astype(image.dtype)
