"""Neighbours and k-NN accuracy against scikit-learn's brute force."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from convscope.analysis import knn
from convscope.analysis.knn import knn_accuracy, knn_over_shards, knn_search, vote
from convscope.analysis.neighbours import run_neighbours, sample_queries
from convscope.analysis.input_pixels import InputPixels
from convscope.config import ConfigError, NeighboursConfig, PreprocessConfig, validate_config
from convscope.data.manifest import write_manifest
from convscope.nn.device import DeviceError
from convscope.store.shards import write_shard

CLASS_NAMES = ["circle", "square", "triangle", "star"]


def _cfg(**settings) -> NeighboursConfig:
    """The neighbours section with ``settings`` over the schema's defaults."""
    return NeighboursConfig.from_dict(validate_config({"neighbours": settings})["neighbours"])


def _outputs(folder):
    """Output paths of run_neighbours under ``folder`` (names as the rule declares them)."""
    return {"queries": folder / "queries.csv", "panels": folder / "panels.png",
            "accuracy": folder / "knn_accuracy.json"}


def _synthetic(n=300, dims=32, thumb=16, seed=0, unlabelled=0):
    """Clustered codes, noisy thumbnails, labels (some -1)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASS_NAMES), size=n).astype(np.int32)
    centres = rng.normal(size=(len(CLASS_NAMES), dims)) * 2
    codes = (centres[labels] + rng.normal(size=(n, dims))).astype(np.float32)
    colours = rng.integers(0, 256, size=(len(CLASS_NAMES), 3))
    thumbs = colours[labels][:, None, None, :] + rng.normal(scale=60, size=(n, thumb, thumb, 3))
    thumbs = np.clip(thumbs, 0, 255).astype(np.uint8)
    if unlabelled:
        labels[rng.choice(n, size=unlabelled, replace=False)] = -1
    return codes, thumbs, labels


def _write(tmp_path, codes, thumbs, labels, sizes):
    paths, start = [], 0
    for i, size in enumerate(sizes):
        rows = slice(start, start + size)
        path = tmp_path / "features" / f"shard-{i:05d}.h5"
        write_shard(path, {
            "index": np.arange(start, start + size, dtype=np.int64) + 1000,
            "label": labels[rows],
            "codes": codes[rows],
            "thumbs": thumbs[rows],
        }, {"class_names": CLASS_NAMES})
        paths.append(path)
        start += size
    return paths


@pytest.fixture
def data(tmp_path):
    codes, thumbs, labels = _synthetic(unlabelled=20)
    paths = _write(tmp_path, codes, thumbs, labels, [120, 100, 77, 3])
    return paths, codes, thumbs, labels


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sklearn_loo(features, k, metric, mask=None):
    """Brute-force k nearest (self excluded) with scikit-learn, positions in the full set."""
    rows = np.arange(len(features)) if mask is None else np.flatnonzero(mask)
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric=metric).fit(features[rows])
    dist, idx = nn.kneighbors(features[rows])
    out_d, out_i = [], []
    for i in range(len(rows)):
        keep = idx[i] != i
        out_d.append(dist[i][keep][:k])
        out_i.append(rows[idx[i][keep][:k]])
    return np.array(out_d), np.array(out_i)


#: Float32 distances summed in another order (BLAS, torch, another CPU) agree with the
#: float64 reference to this; neighbours closer than that to each other may swap.
DIST_RTOL, DIST_ATOL = 1e-4, 1e-5


def assert_nearest(dist, pos, exact):
    """``pos`` (nq, k) are k distinct nearest neighbours under ``exact`` (nq, N) float64
    distances (inf: not a candidate), nearest first, and ``dist`` their distances.

    Compared by distance, rank by rank: the neighbour at each rank is as near as the
    reference's at that rank, within the tolerance, so neighbours at near-equal distances
    count in either order (as float rounding may order them) and any other swap fails.
    """
    k = pos.shape[1]
    want = np.sort(exact, axis=1)[:, :k]
    assert (pos >= 0).all() and all(len(set(row)) == k for row in pos.tolist())
    np.testing.assert_allclose(np.take_along_axis(exact, pos, 1), want,
                               rtol=DIST_RTOL, atol=DIST_ATOL)
    np.testing.assert_allclose(dist, want, rtol=DIST_RTOL, atol=DIST_ATOL)


def test_assert_nearest_accepts_near_ties_in_either_order_only():
    exact = np.array([[np.inf, 1.0, 2.0, 2.0 + 1e-9, 3.0]])
    assert_nearest(np.array([[1.0, 2.0, 2.0]]), np.array([[1, 3, 2]]), exact)
    assert_nearest(np.array([[1.0, 2.0, 2.0]]), np.array([[1, 2, 3]]), exact)
    with pytest.raises(AssertionError):  # 3.0 instead of a 2.0: not a tie
        assert_nearest(np.array([[1.0, 2.0, 2.0]]), np.array([[1, 2, 4]]), exact)
    with pytest.raises(AssertionError):  # the same neighbour twice
        assert_nearest(np.array([[1.0, 2.0, 2.0]]), np.array([[1, 2, 2]]), exact)


@pytest.mark.parametrize("space", ["code", "pixel"])
def test_loo_neighbours_match_sklearn(data, space, monkeypatch):
    paths, codes, thumbs, labels = data
    # Small tiles and blocks so that the tiling and the block merge are exercised.
    monkeypatch.setattr(knn, "_TILE_QUERIES", 37)
    monkeypatch.setattr(knn, "_TILE_REFERENCES", 50)
    features = codes if space == "code" else thumbs.reshape(len(thumbs), -1) / 255.0
    metric = "cosine" if space == "code" else "euclidean"
    k = 7
    # ~100 kB per query block: pixel space runs in 9 blocks, shards partly cached.
    dist, pos = knn_over_shards(paths, space, k, block_mb=0.1)
    ref_d, _ = _sklearn_loo(features.astype(np.float64), k, metric)
    exact = pairwise_distances(features.astype(np.float64), metric=metric)
    np.fill_diagonal(exact, np.inf)  # leave-one-out
    np.testing.assert_allclose(np.sort(exact, axis=1)[:, :k], ref_d, rtol=1e-9, atol=1e-12)
    assert_nearest(dist, pos, exact)
    assert not np.any(pos == np.arange(len(pos))[:, None]), "self must be excluded"


def test_query_subset_and_reference_mask(data):
    paths, codes, _, labels = data
    mask = labels >= 0
    queries = np.array([250, 3, 140, 3])
    dist, pos = knn_over_shards(paths, "code", 5, query_rows=queries, reference_mask=mask,
                                block_mb=256)
    feats = _unit(codes.astype(np.float64))
    exact = 1 - feats[queries] @ feats.T
    exact[:, ~mask] = np.inf
    exact[np.arange(len(queries)), queries] = np.inf
    assert_nearest(dist, pos, exact)
    assert mask[pos].all()


def test_knn_search_pads_when_few_references():
    refs = np.eye(3, dtype=np.float32)
    dist, pos = knn_search(refs, [(np.arange(3), refs)], 4, metric="euclidean",
                           query_positions=np.arange(3))
    assert (pos[:, 2:] == -1).all() and np.isinf(dist[:, 2:]).all()
    np.testing.assert_allclose(dist[:, :2], np.sqrt(2), rtol=1e-6)


def _vote_reference(labels, dists):
    out = []
    for lab, dist in zip(labels, dists):
        counts = Counter(int(x) for x in lab if x >= 0)
        if not counts:
            out.append(-1)
            continue
        best = max(counts.values())
        tied = [c for c, m in counts.items() if m == best]
        summed = {c: sum(d for x, d in zip(lab, dist) if x == c) for c in tied}
        out.append(min(tied, key=lambda c: (summed[c], c)))
    return np.array(out)


def test_vote_tie_break_matches_python():
    rng = np.random.default_rng(1)
    labels = rng.integers(-1, 4, size=(500, 6))
    dists = np.round(rng.random((500, 6)), 1)  # coarse values: exact ties happen
    np.testing.assert_array_equal(vote(labels, dists), _vote_reference(labels, dists))
    # Explicit tie: 2 votes each, class 3 closer in sum -> 3; equal sums -> smaller id.
    assert vote(np.array([[1, 3, 1, 3]]), np.array([[0.1, 0.2, 0.5, 0.1]]))[0] == 3
    assert vote(np.array([[3, 1]]), np.array([[0.2, 0.2]]))[0] == 1


def test_knn_accuracy_matches_sklearn_classifier(data):
    paths, codes, _, labels = data
    mask = labels >= 0
    labelled = np.flatnonzero(mask)
    k = 5
    dist, pos = knn_over_shards(paths, "code", k, query_rows=labelled, reference_mask=mask,
                                block_mb=256)
    local = np.searchsorted(labelled, pos)
    acc = knn_accuracy(labels[labelled], local, dist, [1, 3, 5])
    # Independent: a plain Python vote over the neighbours found, which are checked against
    # scikit-learn's by distance (a near-tie may come in either order), with exact distances.
    ref_d, _ = _sklearn_loo(codes.astype(np.float64), k, "cosine", mask)
    exact = pairwise_distances(codes[labelled].astype(np.float64), metric="cosine")
    np.fill_diagonal(exact, np.inf)
    np.testing.assert_allclose(np.sort(exact, axis=1)[:, :k], ref_d, rtol=1e-9, atol=1e-12)
    assert_nearest(dist, local, exact)
    found_d, found_labels = np.take_along_axis(exact, local, 1), labels[labelled][local]
    for kk in (1, 3, 5):
        predicted = _vote_reference(found_labels[:, :kk], found_d[:, :kk])
        assert acc[kk] == pytest.approx(np.mean(predicted == labels[labelled]))
    assert acc[5] > 0.8  # well-separated clusters


def test_sample_queries_is_seeded_and_per_class():
    labels = np.repeat(np.arange(12), 10)
    a = sample_queries(labels, per_class=2, max_classes=5, seed=3)
    b = sample_queries(labels, per_class=2, max_classes=5, seed=3)
    np.testing.assert_array_equal(a, b)
    per_class = Counter(labels[a].tolist())
    assert len(per_class) == 5 and set(per_class.values()) == {2}
    assert len(sample_queries(np.full(30, -1), 2, 3, seed=0)) == 6


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"neighbours\.kk.*valid keys"):
        _cfg(kk=3)
    with pytest.raises(ConfigError, match=r"neighbours\.spaces"):
        _cfg(spaces=["codes"])
    with pytest.raises(ConfigError, match=r"neighbours\.accuracy_k"):
        _cfg(accuracy_k=[])
    with pytest.raises(ConfigError, match=r"neighbours\.device"):
        _cfg(device="gpu")
    assert _cfg().k == 8 and _cfg().spaces == ["code", "pixel"]  # the schema's defaults


def test_missing_cuda_device_names_the_key(data, tmp_path):
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"  # a device not on this machine
    with pytest.raises(DeviceError, match=r"neighbours\.device"):
        run_neighbours(data[0], None, _cfg(device=missing), **_outputs(tmp_path / "n"))
    assert not (tmp_path / "n").exists()  # refused before any output


def test_run_neighbours_writes_outputs(data, tmp_path):
    paths, codes, _, labels = data
    out = tmp_path / "neighbours"
    summary = run_neighbours(paths, None, _cfg(k=4, accuracy_k=[1, 3], device="cpu", block_mb=1),
                             **_outputs(out))
    assert sorted(p.name for p in out.iterdir()) == ["knn_accuracy.json", "panels.png",
                                                     "queries.csv"]
    table = pd.read_csv(out / "queries.csv")
    assert set(table["space"]) == {"code", "pixel"}
    assert table.groupby(["query_index", "space"]).size().eq(4).all()
    assert table["query_index"].nunique() == len(CLASS_NAMES)  # one query per class
    assert (table["query_index"] != table["neighbour_index"]).all()
    assert table["neighbour_index"].between(1000, 1000 + len(labels) - 1).all()
    assert (out / "panels.png").stat().st_size > 0
    saved = json.loads((out / "knn_accuracy.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["n"] == int((labels >= 0).sum())
    assert {(r["space"], r["k"]) for r in saved["results"]} == {
        ("code", 1), ("code", 3), ("pixel", 1), ("pixel", 3)}
    # A query list by manifest index.
    run_neighbours(paths, None, _cfg(k=2, query_rows=[1005, 1290], accuracy_k=[1]),
                   **_outputs(out))
    table = pd.read_csv(out / "queries.csv")
    assert sorted(table["query_index"].unique()) == [1005, 1290]
    with pytest.raises(ValueError, match="query_rows"):
        run_neighbours(paths, None, _cfg(query_rows=[7]), **_outputs(out))


@pytest.mark.parametrize("n_images", [1, 2])
def test_fewer_images_than_k_are_noted(tmp_path, n_images):
    codes, thumbs, labels = _synthetic(n=n_images)
    labels[:] = np.arange(n_images) % 2
    paths = _write(tmp_path, codes, thumbs, labels, [n_images])
    out = tmp_path / "neighbours"
    summary = run_neighbours(paths, None, _cfg(k=8, accuracy_k=[1, 5]), **_outputs(out))
    assert sorted(p.name for p in out.iterdir()) == ["knn_accuracy.json", "panels.png",
                                                     "queries.csv"]
    table = pd.read_csv(out / "queries.csv")
    assert len(table) == (n_images - 1) * n_images * 2  # every other image, in two spaces
    assert (f"neighbours.k is 8 but the dataset has {n_images} readable image(s), so each "
            f"query has at most {n_images - 1} neighbour(s)") in summary["notes"]
    if n_images == 1:
        assert summary["results"] == []
        assert any("needs at least 2 labelled images" in note for note in summary["notes"])
    else:
        # two images of different classes: the one neighbour always votes wrong
        assert {r["accuracy"] for r in summary["results"]} == {0.0}
        assert {r["k_used"] for r in summary["results"]} == {1}
        assert any("accuracy_k asks for up to 5" in note for note in summary["notes"])


def test_pixel_metric_cosine_matches_numpy_brute_force(data, tmp_path):
    paths, _, thumbs, labels = data
    pixels = thumbs.reshape(len(thumbs), -1).astype(np.float64) / 255.0
    unit = pixels / np.linalg.norm(pixels, axis=1, keepdims=True)
    cosine = 1.0 - unit @ unit.T  # independent: every pair by numpy
    np.fill_diagonal(cosine, np.inf)
    euclidean = np.sqrt(((pixels[:, None, :] - pixels[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(euclidean, np.inf)
    queries = np.array([0, 17, 150, 299])
    k = 6
    for metric, full in (("cosine", cosine), ("euclidean", euclidean)):
        dist, pos = knn_over_shards(paths, "pixel", k, query_rows=queries, block_mb=0.05,
                                    metric=metric)
        assert_nearest(dist, pos, full[queries])
    # Through the stage: the configured metric is used and recorded.
    out = tmp_path / "cos"
    summary = run_neighbours(paths, None, _cfg(spaces=["pixel"], pixel_metric="cosine", k=3,
                                               query_rows=[1000, 1150], accuracy_k=[1]),
                             **_outputs(out))
    assert summary["spaces"]["pixel"]["metric"] == "cosine"
    assert {r["metric"] for r in summary["results"]} == {"cosine"}
    table = pd.read_csv(out / "queries.csv")
    for row in table.to_dict("records"):
        q, r = row["query_index"] - 1000, row["neighbour_index"] - 1000
        assert row["distance"] == pytest.approx(cosine[q, r], abs=1e-5)
    assert _cfg().pixel_metric == "euclidean"  # the default, as before
    with pytest.raises(ConfigError, match=r"neighbours\.pixel_metric.*'cosine'"):
        _cfg(pixel_metric="manhattan")


# --------------------------------------------------------------------------
# pixel_space: input -- the model's input pixels, read from the manifest's files

#: per case: (preprocess settings, image (width, height) cycled over the images).
#: Every resize gives whole sizes and every crop offset is whole, so the
#: independent numpy computation below needs no rounding convention.
INPUT_CASES = {
    "as_is": ({"input_size": 12, "resize": None}, [(12, 12)]),
    "crop": ({"input_size": 12, "resize": None, "crop": "center"},
             [(20, 16), (16, 24), (12, 12), (18, 14)]),
    "resize_crop": ({"input_size": 12, "resize": 16, "crop": "center"},
                    [(32, 48), (48, 32), (40, 40), (16, 20)]),
    "grey": ({"input_size": [10, 12], "resize": None, "channels": 1}, [(12, 10)]),
}
FAILED_INDEX = 5  # a manifest row whose file is not an image: not in the shards


def _preprocess(settings) -> PreprocessConfig:
    return PreprocessConfig.from_dict(validate_config({"preprocess": settings})["preprocess"])


def _expected_input_pixels(image: np.ndarray, settings: dict) -> np.ndarray:
    """The model's uint8 input of one image, by PIL and numpy (resize, centre crop, luma)."""
    size = settings["input_size"]
    in_h, in_w = (size, size) if isinstance(size, int) else size
    h, w = image.shape[:2]
    if settings.get("resize"):
        scale = settings["resize"] / min(w, h)
        new_w, new_h = int(w * scale), int(h * scale)
        assert (new_w / scale, new_h / scale) == (w, h)  # whole sizes only
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        h, w = new_h, new_w
    assert (h - in_h) % 2 == 0 and (w - in_w) % 2 == 0  # whole crop offsets only
    top, left = (h - in_h) // 2, (w - in_w) // 2
    image = image[top:top + in_h, left:left + in_w]
    if settings.get("channels") == 1:
        rgb = image.astype(np.float32)
        luma = (rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587)
                + rgb[..., 2] * np.float32(0.114))
        image = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
    return image


def _image_dataset(tmp_path, sizes, n=14, shard_sizes=(5, 4, 4), seed=3):
    """PNG files, their manifest (row FAILED_INDEX is a broken file) and shards without it.

    Returns ``(manifest_csv, shard paths, images of the shard rows in shard order,
    manifest indices of the shard rows, their labels)``.
    """
    rng = np.random.default_rng(seed)
    folder = tmp_path / "images"
    folder.mkdir()
    images, paths = [], []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        if i == FAILED_INDEX:
            path.write_bytes(b"not a png at all")
            images.append(None)
        else:
            w, h = sizes[i % len(sizes)]
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(path)
            images.append(image)
        paths.append(str(path))
    labels = (np.arange(n) % 3).astype(np.int32)
    manifest_csv = tmp_path / "manifest.csv"
    write_manifest(pd.DataFrame({"index": np.arange(n), "path": paths, "slot": -1,
                                 "label": labels, "split": "all"}), CLASS_NAMES, manifest_csv)
    kept = np.array([i for i in range(n) if i != FAILED_INDEX], dtype=np.int64)
    assert sum(shard_sizes) == len(kept)
    shard_paths, start = [], 0
    for s, size in enumerate(shard_sizes):
        rows = kept[start:start + size]
        path = tmp_path / "features" / f"shard-{s:05d}.h5"
        write_shard(path, {"index": rows, "label": labels[rows],
                           "codes": rng.normal(size=(size, 6)).astype(np.float32),
                           "thumbs": rng.integers(0, 256, (size, 4, 4, 3), dtype=np.uint8),
                           "failed/index": np.array([FAILED_INDEX] if s == 0 else [], np.int64),
                           "failed/reason": np.array(["not an image"] if s == 0 else [], str)},
                    {"class_names": CLASS_NAMES})
        shard_paths.append(path)
        start += size
    return manifest_csv, shard_paths, [images[i] for i in kept], kept, labels[kept]


def _brute_force(pixels: np.ndarray, metric: str) -> np.ndarray:
    """All pairwise distances (self = inf) of (n, F) float64 rows, by numpy."""
    if metric == "cosine":
        unit = pixels / np.linalg.norm(pixels, axis=1, keepdims=True)
        full = 1.0 - unit @ unit.T
    else:
        full = np.sqrt(((pixels[:, None, :] - pixels[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    return full


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_input_pixel_neighbours_match_numpy_brute_force(tmp_path, case, monkeypatch):
    settings, sizes = INPUT_CASES[case]
    manifest_csv, shard_paths, images, kept, _ = _image_dataset(tmp_path, sizes)
    expected = np.stack([_expected_input_pixels(image, settings) for image in images])
    pixels = expected.reshape(len(expected), -1).astype(np.float64) / 255.0
    # Images are decoded shard by shard (or part of one), never the failed one.
    requested = []
    original = InputPixels.of_index

    def recording(self, index):
        requested.append(np.asarray(index).copy())
        return original(self, index)

    monkeypatch.setattr(InputPixels, "of_index", recording)
    source = InputPixels(manifest_csv, _preprocess(settings), workers=2)
    k = 4
    for metric in ("euclidean", "cosine"):
        full = _brute_force(pixels, metric)
        # 0.004 MB: a few query rows per block and no shard cached (every shard is
        # decoded again per block); 1 MB: everything decoded once and cached.
        for block_mb in (0.004, 1):
            requested.clear()
            dist, pos = knn_over_shards(shard_paths, "pixel", k, block_mb=block_mb,
                                        metric=metric, input_pixels=source)
            assert_nearest(dist, pos, full)
            assert requested and max(len(r) for r in requested) <= 5  # one shard at most
            assert FAILED_INDEX not in np.concatenate(requested)
        # A subset of queries, with some rows excluded as references.
        queries = np.array([12, 0, 7])
        mask = np.ones(len(kept), bool)
        mask[[1, 8]] = False
        dist, pos = knn_over_shards(shard_paths, "pixel", k, block_mb=0.004, metric=metric,
                                    input_pixels=source, query_rows=queries,
                                    reference_mask=mask)
        assert_nearest(dist, pos, np.where(mask[None, :], full[queries], np.inf))


def test_run_neighbours_in_input_pixels(tmp_path):
    settings, sizes = INPUT_CASES["crop"]
    manifest_csv, shard_paths, images, kept, labels = _image_dataset(tmp_path, sizes)
    expected = np.stack([_expected_input_pixels(image, settings) for image in images])
    pixels = expected.reshape(len(expected), -1).astype(np.float64) / 255.0
    position = {int(index): i for i, index in enumerate(kept)}
    for metric in ("euclidean", "cosine"):
        full = _brute_force(pixels, metric)
        out = tmp_path / f"out_{metric}"
        cfg = _cfg(pixel_space="input", pixel_metric=metric, k=3, accuracy_k=[1, 3],
                   query_rows=[0, 6, 13], device="cpu", block_mb=1)
        summary = run_neighbours(shard_paths, manifest_csv, cfg, **_outputs(out),
                                 preprocess=_preprocess(settings), n_threads=2)
        table = pd.read_csv(out / "queries.csv")
        assert set(zip(table["space"], table["features"])) == {("code", "codes"),
                                                               ("pixel", "input")}
        pixel_rows = table[table["space"] == "pixel"]
        for query, group in pixel_rows.groupby("query_index"):
            q, ranked = position[int(query)], group.sort_values("rank")
            assert_nearest(ranked["distance"].to_numpy()[None],
                           np.array([[position[int(i)] for i in ranked["neighbour_index"]]]),
                           full[q][None])
        assert FAILED_INDEX not in set(table["neighbour_index"])
        assert summary["spaces"]["pixel"] == {"features": "input", "dataset": None,
                                              "metric": metric, "pixel_space": "input",
                                              "input_shape": [12, 12, 3]}
        assert summary["spaces"]["code"]["features"] == "codes"
        one_nn = {r["space"]: r for r in summary["results"] if r["k"] == 1}
        assert one_nn["pixel"]["features"] == "input" and one_nn["pixel"]["metric"] == metric
        # leave-one-out 1-NN accuracy by pandas: the nearest image's label against its own
        nearest = pd.Series(np.argmin(full, axis=1))
        assert one_nn["pixel"]["accuracy"] == pytest.approx(
            float((pd.Series(labels)[nearest].to_numpy() == labels).mean()))
        assert json.loads((out / "knn_accuracy.json").read_text()) == json.loads(
            json.dumps(summary))


def test_thumbs_stay_the_default_pixel_space(data, tmp_path):
    paths = data[0]
    assert _cfg().pixel_space == "thumbs"
    summary = run_neighbours(paths, None, _cfg(k=2, accuracy_k=[1], device="cpu"),
                             **_outputs(tmp_path / "n"))
    assert summary["spaces"]["pixel"] == {"features": "thumbs", "dataset": "thumbs",
                                          "metric": "euclidean", "pixel_space": "thumbs"}
    table = pd.read_csv(tmp_path / "n" / "queries.csv")
    assert set(zip(table["space"], table["features"])) == {("code", "codes"),
                                                           ("pixel", "thumbs")}
    with pytest.raises(ConfigError, match=r"neighbours\.pixel_space.*'input'"):
        _cfg(pixel_space="raw")


def test_input_pixels_need_the_manifest_and_preprocess(tmp_path):
    settings, sizes = INPUT_CASES["as_is"]
    manifest_csv, shard_paths, *_ = _image_dataset(tmp_path, sizes)
    cfg = _cfg(pixel_space="input", device="cpu")
    with pytest.raises(ValueError, match=r"neighbours\.pixel_space is 'input'.*preprocess"):
        run_neighbours(shard_paths, manifest_csv, cfg, **_outputs(tmp_path / "n"))
    assert not (tmp_path / "n").exists()
    # Only the pixel space needs them.
    run_neighbours(shard_paths, manifest_csv, _cfg(pixel_space="input", spaces=["code"], k=2,
                                                   accuracy_k=[1], device="cpu"),
                   **_outputs(tmp_path / "n"))
    # An image deleted since extraction is named.
    (tmp_path / "images" / "img03.png").unlink()
    with pytest.raises(ValueError, match=r"img03\.png \(manifest index 3\) cannot be read"):
        run_neighbours(shard_paths, manifest_csv, cfg, **_outputs(tmp_path / "n2"),
                       preprocess=_preprocess(settings))
