"""Stages split into chunks: the merged chunks equal the unsplit result.

Library level: chunk files written separately and joined by `concat_h5` / `merge_folders`
equal one file written whole (numpy slicing as the reference). Workflow level: the tiny
run's chunked stages (tests/data/tiny_config.yaml: two attribution chunks, two
synthesis_units chunks) rerun with one chunk each give the same files.
"""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import TINY_CONFIG, h5_datasets, run_snakemake
from convscope.store.chunks import (batches_per_chunk, chunk_items, chunk_paths, concat_h5,
                                    merge_folders, n_batch_chunks, n_chunks)
from convscope.synthesis.units import (merge_unit_visualisation, run_unit_chunk,
                                       run_unit_visualisation, unit_batches)
from synthesis_helpers import demo_weights, sections


def _write(path, rows: dict, attrs: dict) -> None:
    with h5py.File(path, "w") as f:
        for name, values in rows.items():
            kwargs = {"chunks": (1, *values.shape[1:]), "compression": "gzip",
                      "compression_opts": 1} if values.ndim == 3 and len(values) else {}
            f.create_dataset(name, data=values, **kwargs)
        f.attrs.update(attrs)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
def test_chunks_joined_equal_the_whole(tmp_path, chunk_size):
    rng = np.random.default_rng(0)
    whole = {"index": np.arange(7, dtype=np.int64) * 3,
             "maps/a": rng.normal(size=(7, 4, 5)).astype(np.float32),
             "prob": rng.random(7).astype(np.float32)}
    attrs = {"methods": ["a"], "layer": "conv1"}
    count = n_chunks(7, chunk_size)
    assert count == -(-7 // chunk_size)
    parts = []
    for chunk in range(count + 1):  # one chunk more than needed: empty, zero rows
        rows = {name: chunk_items(values, chunk, chunk_size) for name, values in whole.items()}
        parts.append(tmp_path / f"part{chunk}.h5")
        _write(parts[-1], rows, attrs)
    concat_h5(parts, tmp_path / "merged.h5")
    merged = h5_datasets(tmp_path / "merged.h5")
    assert merged.keys() == whole.keys()
    for name, values in whole.items():
        assert merged[name].dtype == values.dtype and np.array_equal(merged[name], values), name
    with h5py.File(tmp_path / "merged.h5") as f:
        assert list(f.attrs["methods"]) == ["a"] and f.attrs["layer"] == "conv1"
        assert f["maps/a"].compression == "gzip" and f["maps/a"].chunks == (1, 4, 5)


def test_merged_folders_hold_every_chunk_file_and_no_clash(tmp_path):
    for chunk, names in enumerate([["a.png", "sub/b.png"], ["c.png"]]):
        for name in names:
            path = tmp_path / f"chunk{chunk}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(name.encode())
        (tmp_path / f"chunk{chunk}" / ".snakemake_timestamp").write_text("")
    copied = merge_folders([tmp_path / "chunk0", tmp_path / "chunk1"], tmp_path / "out")
    assert sorted(p.as_posix() for p in copied) == ["a.png", "c.png", "sub/b.png"]
    assert (tmp_path / "out" / "sub" / "b.png").read_bytes() == b"sub/b.png"
    assert not (tmp_path / "out" / ".snakemake_timestamp").exists()
    (tmp_path / "chunk1" / "a.png").write_bytes(b"again")
    with pytest.raises(ValueError, match="two chunks wrote a.png"):
        merge_folders([tmp_path / "chunk0", tmp_path / "chunk1"], tmp_path / "out2")


def test_a_chunk_size_below_one_is_refused():
    with pytest.raises(ValueError, match="chunk size must be >= 1"):
        n_chunks(5, 0)


def test_unit_batches_keep_their_units_and_seed_offsets_whatever_the_chunks():
    chosen = {"b": [5, 6, 7, 8, 9], "a": [0, 3]}
    assert unit_batches(chosen, 2) == [("b", 0, [5, 6]), ("b", 1, [7, 8]), ("b", 2, [9]),
                                       ("a", 0, [0, 3])]
    assert batches_per_chunk(5, 2) == 2 and batches_per_chunk(1, 2) == 1
    assert n_batch_chunks([5, 2], 2, 4) == 2 and n_batch_chunks([5, 2], 2, 1) == 4


def _unit_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}


def test_unit_images_in_chunks_merged_equal_the_unsplit_run(tmp_path):
    model_cfg, preprocess, synthesis = sections(visualisation={
        "steps": 3, "batch_size": 2, "units": {"relu2": [4, 1, 2], "relu1": [0, 5]}})
    weights, vis = demo_weights(tmp_path / "w.pt"), synthesis.visualisation
    whole = tmp_path / "whole"
    run_unit_visualisation(model_cfg, weights, preprocess, vis, "cpu", 3, None, stats_csv=None,
                           shard_paths=[], images_h5=whole / "images.h5", png_dir=whole / "png",
                           curves_png=whole / "curves.png", summary_json=whole / "summary.json")
    parts = tmp_path / "chunks"
    count = n_batch_chunks([3, 2], 2, 2)
    assert count == 3
    for chunk in range(count + 1):  # the last one empty
        run_unit_chunk(model_cfg, weights, preprocess, vis, "cpu", 3, None, stats_csv=None,
                       images_h5=parts / f"{chunk}.h5", png_dir=parts / f"{chunk}",
                       chunk=chunk, chunks_of=1)
    merged = tmp_path / "merged"
    merge_unit_visualisation(vis, preprocess,
                             chunk_images=[parts / f"{c}.h5" for c in range(count + 1)],
                             chunk_png=[parts / f"{c}" for c in range(count + 1)],
                             shard_paths=[],
                             images_h5=merged / "images.h5", png_dir=merged / "png",
                             curves_png=merged / "curves.png",
                             summary_json=merged / "summary.json")
    a, b = h5_datasets(whole / "images.h5"), h5_datasets(merged / "images.h5")
    assert a.keys() == b.keys() and b["channel"].tolist() == [4, 1, 2, 0, 5]
    for key in a:  # without shards the dataset best (quality/reference) is NaN in both
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key
    assert _unit_files(whole) == _unit_files(merged)
    assert (whole / "summary.json").read_text() == (merged / "summary.json").read_text()


#: the chunked stages' merged outputs (files and folders), compared after a one-chunk rerun
_MERGED = ["results/explain/attribution", "results/synthesis/units"]


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file() and "chunks" not in p.relative_to(root).parts
            and not p.name.startswith(".")}


@pytest.mark.workflow
def test_one_chunk_gives_the_files_of_several(tiny_run, tmp_path):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    assert config["explain"]["chunk_size"] < config["explain"]["images"]["max_images"]
    config["explain"]["chunk_size"] = config["synthesis"]["chunk_size"] = 1000
    one_chunk = tmp_path / "one_chunk.yaml"
    one_chunk.write_text(yaml.safe_dump(config, sort_keys=False))  # key order: params
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)  # mtimes kept: nothing upstream reruns
    result = run_snakemake(workdir, *[f"{d}/summary.json" for d in _MERGED], "--configfile",
                           one_chunk, "--cores", "2")
    assert "explain_attribution_chunk" in result.stderr, result.stderr[-2000:]
    assert "synthesis_units_chunk" in result.stderr
    assert "rule extract" not in result.stderr and "rule train_demo_model" not in result.stderr
    for folder, name in zip(_MERGED, ["maps.h5", "images.h5"]):  # two chunks, and now one
        assert (tiny_run / folder / "chunks" / "00001" / name).is_file()
        with h5py.File(workdir / folder / "chunks" / "00000" / name) as one, \
                h5py.File(workdir / folder / name) as merged:
            assert len(one["index" if name == "maps.h5" else "channel"]) == \
                len(merged["index" if name == "maps.h5" else "channel"]) > 0
    for folder in _MERGED:
        several, one = _files(tiny_run / folder), _files(workdir / folder)
        assert several.keys() == one.keys(), folder
        for name in several:
            if name.endswith(".h5"):
                a, b = h5_datasets(several[name]), h5_datasets(one[name])
                assert a.keys() == b.keys()
                for key in a:
                    assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key
            else:
                assert several[name].read_bytes() == one[name].read_bytes(), f"{folder}/{name}"


def test_chunk_paths_picks_the_chunk_outputs_in_chunk_order():
    inputs = ["results/x/chunks/00001/maps.h5", "results/x/chunks/00001/panels",
              "results/x/chunks/00000/maps.h5", "results/features/index.json",
              "results/x/chunks/00000/panels"]
    assert chunk_paths(inputs, "maps.h5") == ["results/x/chunks/00000/maps.h5",
                                              "results/x/chunks/00001/maps.h5"]
    assert chunk_paths(inputs, "panels") == ["results/x/chunks/00000/panels",
                                             "results/x/chunks/00001/panels"]
