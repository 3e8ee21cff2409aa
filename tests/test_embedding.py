"""t-SNE of CNN codes: streamed PCA, reproducible openTSNE, outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.decomposition import PCA

from convscope.analysis.embedding import (
    fit_tsne,
    l2_normalize,
    map_trustworthiness,
    reduce_codes,
    run_embedding,
)
from convscope.config import ConfigError, EmbeddingConfig, validate_config
from convscope.store.shards import write_shard

CLASS_NAMES = ["a", "b", "c"]
FAST = {"n_iter": 150, "early_exaggeration_iter": 50, "perplexity": 15}
OUTPUTS = ("coords", "scatter", "mosaic", "cloud", "summary")


def _cfg(**settings) -> EmbeddingConfig:
    """The embedding section with ``settings`` over the schema's defaults."""
    return EmbeddingConfig.from_dict(validate_config({"embedding": settings})["embedding"])


def _outputs(folder):
    """Output paths of run_embedding under ``folder`` (names as the rule declares them)."""
    names = {"coords": "coords.csv", "scatter": "scatter.png", "mosaic": "mosaic.png",
             "cloud": "cloud.png", "summary": "embedding.json"}
    return {key: folder / name for key, name in names.items()}


def _shards(tmp_path, n=240, dims=32, sizes=(100, 100, 37, 3), seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASS_NAMES), size=n).astype(np.int32)
    centres = rng.normal(size=(len(CLASS_NAMES), dims)) * 3
    codes = (centres[labels] + rng.normal(size=(n, dims))).astype(np.float32)
    thumbs = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    paths, start = [], 0
    for i, size in enumerate(sizes):
        rows = slice(start, start + size)
        path = tmp_path / "features" / f"shard-{i:05d}.h5"
        write_shard(path, {"index": np.arange(start, start + size) * 2, "label": labels[rows],
                           "codes": codes[rows], "thumbs": thumbs[rows]},
                    {"class_names": CLASS_NAMES})
        paths.append(path)
        start += size
    assert start == n
    return paths, codes, labels


def test_streamed_pca_matches_full_pca(tmp_path):
    paths, _, _ = _shards(tmp_path, n=2400, sizes=(700, 700, 700, 300))
    # Replace the codes with a rank-5 signal (distinct variances) plus a little noise:
    # IncrementalPCA then loses only noise between batches and must agree with PCA.
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.normal(size=(32, 5)))[0].T
    codes = (rng.normal(size=(2400, 5)) * [10, 8, 6, 4, 3]) @ basis + 1.0
    codes = (codes + 0.01 * rng.normal(size=codes.shape)).astype(np.float32)
    start = 0
    for path, size in zip(paths, (700, 700, 700, 300)):
        write_shard(path, {"index": np.arange(start, start + size),
                           "codes": codes[start:start + size]}, {})
        start += size
    reduced, info = reduce_codes(paths, pca_dims=5, normalize=False)
    full = PCA(n_components=5).fit(codes)
    expected = full.transform(codes)
    assert reduced.shape == (2400, 5) and info["dims_out"] == 5 and info["n"] == 2400
    np.testing.assert_allclose(info["pca_variance_explained"], full.explained_variance_ratio_,
                               rtol=1e-3)
    signs = np.sign((reduced * expected).sum(axis=0))  # components agree up to sign
    np.testing.assert_allclose(reduced * signs, expected, atol=1e-3)
    # With L2 normalisation the rows are unit vectors before PCA.
    _, info = reduce_codes(paths, pca_dims=5, normalize=True)
    full = PCA(n_components=5).fit(l2_normalize(codes))
    np.testing.assert_allclose(info["pca_variance_explained"], full.explained_variance_ratio_,
                               rtol=1e-2)


def test_pca_dims_capped_by_code_width(tmp_path):
    paths, codes, _ = _shards(tmp_path)
    reduced, info = reduce_codes(paths, pca_dims=50, normalize=False)
    assert reduced.shape == (240, 32) and info["dims_out"] == 32
    assert sum(info["pca_variance_explained"]) == pytest.approx(1.0, abs=1e-5)
    raw, info = reduce_codes(paths, pca_dims=0, normalize=False)
    np.testing.assert_array_equal(raw, codes)
    assert info["pca_variance_explained"] is None


def test_tsne_is_reproducible_with_a_seed():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(100, 8)), rng.normal(size=(100, 8)) + 6])
    a, fitted, info = fit_tsne(points, _cfg(seed=3, **FAST))
    b, _, _ = fit_tsne(points, _cfg(seed=3, **FAST))
    c, _, _ = fit_tsne(points, _cfg(seed=4, **FAST))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert fitted.all() and info["method"] == "bh" and info["n_fitted"] == 200
    trust, n, k = map_trustworthiness(points, a, n_neighbors=10, sample=150, seed=0)
    assert trust > 0.9 and n == 150 and k == 10


def test_tsne_fits_a_sample_and_places_the_rest():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 150)
    points = rng.normal(size=(300, 8)) + 8 * labels[:, None]
    xy, fitted, info = fit_tsne(points, _cfg(seed=0, fit_max=120, transform_batch_size=70, **FAST))
    assert fitted.sum() == 120 and info["n_fitted"] == 120
    assert np.isfinite(xy).all()
    # Placed points land with their own cluster: nearest fitted point has the same label.
    fit_rows, rest = np.flatnonzero(fitted), np.flatnonzero(~fitted)
    d = ((xy[rest, None, :] - xy[None, fit_rows, :]) ** 2).sum(-1)
    assert np.mean(labels[fit_rows[d.argmin(1)]] == labels[rest]) > 0.95


def test_perplexity_is_lowered_for_tiny_datasets():
    points = np.random.default_rng(0).normal(size=(30, 4))
    _, _, info = fit_tsne(points, _cfg(perplexity=30, n_iter=50, early_exaggeration_iter=20))
    assert info["perplexity_effective"] == pytest.approx(29 / 3)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"embedding\.perplexityy.*valid keys"):
        _cfg(perplexityy=5)
    with pytest.raises(ConfigError, match=r"embedding\.method.*'bh'"):
        _cfg(method="exact")
    with pytest.raises(ConfigError, match=r"embedding\.fit_max"):
        _cfg(fit_max=0)
    with pytest.raises(ConfigError, match=r"embedding\.perplexity"):
        _cfg(perplexity=0)
    assert _cfg().perplexity == 30.0 and _cfg().pca_dims == 50  # the schema's defaults


def test_run_embedding_writes_outputs(tmp_path):
    paths, _, labels = _shards(tmp_path)
    out = tmp_path / "embedding"
    cfg = _cfg(**FAST, grid_size=12, tile_px=8, cloud_px=200, cloud_tile_px=16,
               cloud_max_images=50, trust_sample=200)
    summary = run_embedding(paths, None, cfg, **_outputs(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in _outputs(out).values())
    coords = pd.read_csv(out / "coords.csv")
    assert list(coords.columns[:5]) == ["index", "x", "y", "label", "fitted"]
    np.testing.assert_array_equal(coords["index"], np.arange(240) * 2)
    np.testing.assert_array_equal(coords["label"], labels)
    assert coords["fitted"].all()
    in_grid = coords[coords["grid_row"] >= 0]
    assert len(in_grid) == 144  # N > S*S: every cell filled by a distinct image
    assert not in_grid.duplicated(["grid_row", "grid_col"]).any()
    assert Image.open(out / "mosaic.png").size == (96, 96)
    assert Image.open(out / "cloud.png").size == (200, 200)
    assert Image.open(out / "scatter.png").size[0] > 0
    saved = json.loads((out / "embedding.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["n"] == 240 and saved["grid_method"] == "exact"
    assert 0.8 < saved["trustworthiness"] <= 1.0
    assert saved["class_names"] == CLASS_NAMES
    # Same config, same map.
    elsewhere = {key: tmp_path / "again" / f"{key}-file" for key in OUTPUTS}
    run_embedding(paths, None, cfg, **elsewhere)
    again = pd.read_csv(elsewhere["coords"])
    np.testing.assert_array_equal(again[["x", "y"]], coords[["x", "y"]])


@pytest.mark.parametrize("n_images", [1, 2])
def test_too_few_images_write_every_output_and_say_why(tmp_path, n_images):
    paths, _, labels = _shards(tmp_path, n=n_images, sizes=(n_images,))
    out = tmp_path / "embedding"
    summary = run_embedding(paths, None, _cfg(**FAST), **_outputs(out))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in _outputs(out).values())
    assert summary["skipped"] == (f"t-SNE needs at least 4 images, the dataset has {n_images} "
                                  "(readable); no map was made")
    assert json.loads((out / "embedding.json").read_text())["skipped"] == summary["skipped"]
    coords = pd.read_csv(out / "coords.csv")
    np.testing.assert_array_equal(coords["index"], np.arange(n_images) * 2)
    np.testing.assert_array_equal(coords["label"], labels)
    assert coords[["x", "y"]].isna().all().all() and (coords["grid_row"] == -1).all()
    for name in ("scatter.png", "mosaic.png", "cloud.png"):
        assert Image.open(out / name).size[0] > 0
