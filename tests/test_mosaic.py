"""Grid assignment and thumbnail rendering."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from convscope.render.mosaic import gather_thumbs, grid_assign, render_cloud, render_mosaic
from convscope.store.shards import write_shard

METHODS = ["exact", "bisect"]


def _points(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2))


@pytest.mark.parametrize("method", METHODS)
def test_square_grid_is_a_permutation(method):
    cells = grid_assign(_points(64), 8, method=method)
    assert cells.shape == (8, 8)
    np.testing.assert_array_equal(np.sort(cells.ravel()), np.arange(64))


@pytest.mark.parametrize("method", METHODS)
def test_more_points_than_cells_fills_each_cell_with_a_distinct_point(method):
    cells = grid_assign(_points(500), 9, method=method, seed=4)
    assert (cells >= 0).all() and cells.max() < 500
    assert len(np.unique(cells)) == 81
    np.testing.assert_array_equal(cells, grid_assign(_points(500), 9, method=method, seed=4))


@pytest.mark.parametrize("method", METHODS)
def test_fewer_points_than_cells_leaves_cells_empty(method):
    cells = grid_assign(_points(50), 10, method=method)
    placed = cells[cells >= 0]
    np.testing.assert_array_equal(np.sort(placed), np.arange(50))
    assert (cells == -1).sum() == 50


@pytest.mark.parametrize("method", METHODS)
def test_points_on_a_grid_are_recovered(method):
    side = 6
    rr, cc = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    # Row 0 is the top of the map: the largest y.
    xy = np.stack([cc.ravel(), side - 1 - rr.ravel()], axis=1).astype(float)
    perm = np.random.default_rng(0).permutation(side * side)
    cells = grid_assign(xy[perm], side, method=method)
    np.testing.assert_array_equal(perm[cells], np.arange(side * side).reshape(side, side))


def test_exact_is_optimal_and_bisect_is_close():
    xy = _points(100, seed=2)
    exact = grid_assign(xy, 10, method="exact")
    bisect = grid_assign(xy, 10, method="bisect")
    uv = (xy - xy.min(0)) / (xy.max(0) - xy.min(0))
    uv[:, 1] = 1 - uv[:, 1]
    centres = (np.arange(10) + 0.5) / 10

    def cost(cells):
        r, c = np.nonzero(cells >= 0)
        p = cells[r, c]
        return ((uv[p, 0] - centres[c]) ** 2 + (uv[p, 1] - centres[r]) ** 2).sum()

    full = ((uv[:, None, 0] - np.tile(centres, 10)) ** 2
            + (uv[:, None, 1] - np.repeat(centres, 10)) ** 2)
    rows, cols = linear_sum_assignment(full)
    assert cost(exact) == pytest.approx(full[rows, cols].sum())
    assert cost(exact) <= cost(bisect) < 3 * cost(exact)


def test_auto_switches_to_bisect_above_the_limit():
    xy = _points(2000)
    cells = grid_assign(xy, 40, exact_max_cells=100)
    assert len(np.unique(cells)) == 1600
    np.testing.assert_array_equal(cells, grid_assign(xy, 40, method="bisect"))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="method"):
        grid_assign(_points(4), 2, method="greedy")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        grid_assign(np.zeros((4, 3)), 2)


def test_gather_and_render(tmp_path):
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 256, size=(30, 16, 16, 3), dtype=np.uint8)
    paths = []
    for i, (a, b) in enumerate([(0, 12), (12, 25), (25, 30)]):
        path = tmp_path / f"shard-{i:05d}.h5"
        write_shard(path, {"index": np.arange(a, b), "thumbs": thumbs[a:b]}, {})
        paths.append(path)
    rows = np.array([29, 0, 13, 13, 11])
    np.testing.assert_array_equal(gather_thumbs(paths, rows), thumbs[rows])
    assert gather_thumbs(paths, np.array([], dtype=int)).shape == (0, 16, 16, 3)
    with pytest.raises(IndexError):
        gather_thumbs(paths, np.array([30]))

    cells = np.array([[0, 1], [-1, 2]])
    image = np.asarray(render_mosaic(cells, thumbs[:3], tile_px=16, background=(0, 0, 0)))
    assert image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image[:16, 16:], thumbs[1])
    np.testing.assert_array_equal(image[16:, 16:], thumbs[2])
    assert (image[16:, :16] == 0).all()

    cloud = np.asarray(render_cloud(np.array([[0.0, 0.0], [1.0, 1.0]]), thumbs[:2], 64, 16))
    np.testing.assert_array_equal(cloud[48:, :16], thumbs[0])   # smallest y: bottom left
    np.testing.assert_array_equal(cloud[:16, 48:], thumbs[1])   # largest y: top right
