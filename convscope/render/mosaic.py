"""Images laid out on a 2-D map: grid mosaics and thumbnail clouds.

`grid_assign` snaps points of a 2-D map (e.g. t-SNE coordinates) to the
cells of an S x S grid, one point per cell, as in Karpathy's "t-SNE
visualization of CNN codes":

* coordinates are scaled to the unit square (x to columns, y to rows, the
  largest y on the top row, as in a scatter plot);
* if there are more points than cells, a seeded random sample of S*S points
  is placed and the others are left out;
* up to ``exact_max_cells`` cells (default 2500 = 50 x 50) the assignment is
  exact: `scipy.optimize.linear_sum_assignment` minimises the summed squared
  distance between each point and the centre of its cell;
* above that, a scalable **recursive bisection** is used: the grid region is
  cut in two along its longer side, the points are sorted along that axis
  and split so that each half receives a share of points proportional to its
  cells, and both halves are split again until every region is one cell.
  It costs O(N log^2 N), keeps neighbours together and spreads empty cells
  evenly, but is not optimal.

When there are fewer points than cells, every point gets its own cell and the
remaining cells stay empty (-1).

`render_mosaic` and `render_cloud` draw thumbnails (``thumbs`` of the
shards, (n, t, t, 3) uint8) into one PIL image; `gather_thumbs` fetches the
thumbnails of given rows, reading one shard at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from convscope.store.shards import open_shard

__all__ = ["grid_assign", "gather_thumbs", "render_mosaic", "render_cloud"]


def _unit_square(xy: np.ndarray) -> np.ndarray:
    """(n, 2) points scaled to [0, 1]^2 as (column axis, row axis), row 0 = largest y."""
    xy = np.asarray(xy, dtype=np.float64)
    low = xy.min(axis=0)
    span = np.maximum(xy.max(axis=0) - low, 1e-12)
    unit = (xy - low) / span
    return np.stack([unit[:, 0], 1.0 - unit[:, 1]], axis=1)


def _assign_exact(uv: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(point rows, flat cells) of the optimal assignment; len(uv) <= side**2."""
    from scipy.optimize import linear_sum_assignment

    centres = (np.arange(side) + 0.5) / side
    cell_u = np.tile(centres, side)      # column centre of flat cell r * side + c
    cell_v = np.repeat(centres, side)    # row centre
    cost = (uv[:, :1] - cell_u[None, :]) ** 2 + (uv[:, 1:] - cell_v[None, :]) ** 2
    rows, flat_cells = linear_sum_assignment(cost)
    return rows, flat_cells


def _assign_bisect(uv: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(point rows, flat cells) by recursive bisection; len(uv) <= side**2."""
    point_rows = []
    flat_cells = []
    # Each job: (point rows, r0, r1, c0, c1) with len(point rows) <= (r1-r0) * (c1-c0).
    jobs = [(np.arange(len(uv)), 0, side, 0, side)]
    while jobs:
        members, r0, r1, c0, c1 = jobs.pop()
        m = len(members)
        if m == 0:
            continue
        n_rows, n_cols = r1 - r0, c1 - c0
        cells = n_rows * n_cols
        if cells == 1:
            point_rows.append(members[0])
            flat_cells.append(r0 * side + c0)
            continue
        if n_cols >= n_rows:
            cut = c0 + n_cols // 2
            first_cells = n_rows * (cut - c0)
            axis = 0
        else:
            cut = r0 + n_rows // 2
            first_cells = n_cols * (cut - r0)
            axis = 1
        second_cells = cells - first_cells
        m_first = int(round(m * first_cells / cells))
        m_first = min(max(m_first, m - second_cells), first_cells, m)
        # Sort along the cut axis, ties by the other axis, then by row: deterministic.
        order = np.lexsort((members, uv[members, 1 - axis], uv[members, axis]))
        first, second = members[order[:m_first]], members[order[m_first:]]
        if axis == 0:
            jobs.append((first, r0, r1, c0, cut))
            jobs.append((second, r0, r1, cut, c1))
        else:
            jobs.append((first, r0, cut, c0, c1))
            jobs.append((second, cut, r1, c0, c1))
    return np.asarray(point_rows, dtype=np.int64), np.asarray(flat_cells, dtype=np.int64)


def grid_assign(xy: np.ndarray, side: int, *, exact_max_cells: int = 2500, seed: int = 0,
                method: str = "auto") -> np.ndarray:
    """Snap 2-D points to an ``side`` x ``side`` grid, at most one point per cell.

    Args:
        xy: (N, 2) map coordinates.
        side: grid side S (>= 1).
        exact_max_cells: with ``method="auto"``, use the exact assignment up to
            this many cells and recursive bisection above.
        seed: seed of the sample of S*S points taken when N > S*S.
        method: ``"auto"``, ``"exact"`` or ``"bisect"``.

    Returns:
        (S, S) int64: the row of ``xy`` placed in each cell (row 0 on top),
        -1 for an empty cell. Every point appears at most once; all cells are
        filled when N >= S*S, all points are placed when N <= S*S.
    """
    xy = np.asarray(xy)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"grid_assign: xy must be (N, 2), got shape {xy.shape}")
    side = int(side)
    if side < 1:
        raise ValueError(f"grid_assign: side must be >= 1, got {side}")
    if method not in ("auto", "exact", "bisect"):
        raise ValueError(f"grid_assign: method is {method!r}; "
                         "valid values: 'auto', 'exact', 'bisect'")
    n_cells = side * side
    chosen = np.arange(len(xy))
    if len(xy) > n_cells:
        chosen = np.sort(np.random.default_rng(seed).choice(len(xy), size=n_cells, replace=False))
    cells = np.full((side, side), -1, dtype=np.int64)
    if len(chosen) == 0:
        return cells
    uv = _unit_square(xy[chosen])
    exact = method == "exact" or (method == "auto" and n_cells <= exact_max_cells)
    rows, flat_cells = (_assign_exact if exact else _assign_bisect)(uv, side)
    cells.reshape(-1)[flat_cells] = chosen[rows]
    return cells


def _shard_sizes(shard_paths: Sequence) -> np.ndarray:
    """Rows of each shard, (n_shards,) int64, from the HDF5 headers."""
    sizes = []
    for path in shard_paths:
        with open_shard(path) as f:
            sizes.append(int(f["index"].shape[0]))
    return np.asarray(sizes, dtype=np.int64)


def gather_thumbs(shard_paths: Sequence[str | os.PathLike], rows: np.ndarray) -> np.ndarray:
    """Thumbnails (len(rows), t, t, 3) uint8 of the given rows, in the order given.

    ``rows`` are positions in the concatenation of the shards (0 .. N-1, not
    manifest indices). Only shards holding a requested row are opened, one
    at a time.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    sizes = _shard_sizes(shard_paths)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    if len(rows) and (rows.min() < 0 or rows.max() >= starts[-1]):
        raise IndexError(f"gather_thumbs: rows must lie in [0, {starts[-1]}), "
                         f"got {rows.min()}..{rows.max()}")
    out = None
    shard_of_row = np.searchsorted(starts, rows, side="right") - 1
    for shard in np.unique(shard_of_row):
        picked = np.flatnonzero(shard_of_row == shard)
        with open_shard(shard_paths[shard]) as f:
            if "thumbs" not in f:
                raise KeyError(f"shard {shard_paths[shard]} has no dataset 'thumbs'")
            thumbs = f["thumbs"][()]
        if out is None:
            out = np.zeros((len(rows),) + thumbs.shape[1:], dtype=np.uint8)
        out[picked] = thumbs[rows[picked] - starts[shard]]
    if out is None:
        with open_shard(shard_paths[0]) as f:
            out = np.zeros((0,) + f["thumbs"].shape[1:], dtype=np.uint8)
    return out


def _tile(thumb: np.ndarray, tile_px: int) -> Image.Image:
    """A (t, t, 3) uint8 thumbnail as a ``tile_px`` square PIL image."""
    image = Image.fromarray(np.ascontiguousarray(thumb, dtype=np.uint8))
    if image.size != (tile_px, tile_px):
        image = image.resize((tile_px, tile_px), Image.BILINEAR)
    return image


def render_mosaic(cells: np.ndarray, thumbs: np.ndarray, tile_px: int,
                  background=(255, 255, 255)) -> Image.Image:
    """Grid image: cell (r, c) shows ``thumbs[cells[r, c]]``, empty cells (-1) show the background.

    ``cells`` is (S, S) int, ``thumbs`` (M, t, t, 3) uint8; the result is
    (S * tile_px) pixels square, RGB.
    """
    cells = np.asarray(cells)
    n_rows, n_cols = cells.shape
    canvas = Image.new("RGB", (n_cols * tile_px, n_rows * tile_px), tuple(background))
    for r, c in zip(*np.nonzero(cells >= 0)):
        canvas.paste(_tile(thumbs[cells[r, c]], tile_px), (int(c) * tile_px, int(r) * tile_px))
    return canvas


def render_cloud(xy: np.ndarray, thumbs: np.ndarray, canvas_px: int, tile_px: int,
                 background=(255, 255, 255)) -> Image.Image:
    """Thumbnails pasted at their map positions, in the order given (later on top).

    ``xy`` (M, 2) map coordinates, ``thumbs`` (M, t, t, 3) uint8. The map is
    scaled to fit a ``canvas_px`` square (largest y at the top).
    """
    canvas = Image.new("RGB", (canvas_px, canvas_px), tuple(background))
    if len(xy) == 0:
        return canvas
    uv = _unit_square(xy)
    corner = np.round(uv * (canvas_px - tile_px)).astype(int)
    for (left, top), thumb in zip(corner, thumbs):
        canvas.paste(_tile(thumb, tile_px), (int(left), int(top)))
    return canvas
