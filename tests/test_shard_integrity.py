"""Shards carry Fletcher-32 checksums: a damaged or truncated shard stops with a message
that names the file and says what to do, instead of being read as good data."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from convscope.store.shards import (ShardCorruptError, iter_shards, read_attrs, read_concat,
                                    verify_shards, write_shard)


def _arrays(seed: int = 0, n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "index": np.arange(n, dtype=np.int64),
        "label": rng.integers(-1, 3, n).astype(np.int32),
        "codes": rng.normal(size=(n, 64)).astype(np.float32),
        "layers/conv1/max": rng.normal(size=(n, 100)).astype(np.float32),
        "layers/conv1/argmax": rng.integers(0, 50, (n, 100)).astype(np.int32),
        "thumbs": rng.integers(0, 256, (n, 16, 16, 3)).astype(np.uint8),
        "image_attrs/brightness": rng.random(n).astype(np.float32),
        "failed/index": np.array([3, 7], dtype=np.int64),
        "failed/reason": np.array(["cannot identify image file 'é.png'", "empty file"],
                                  dtype=object),
        "empty/rows": np.zeros((0, 5), dtype=np.float32),
    }


def _write_unfiltered(path, arrays):
    """The same arrays as plain HDF5 datasets: no chunks, no filter, vlen strings."""
    with h5py.File(path, "w") as f:
        for name, array in arrays.items():
            if array.dtype == object:
                f.create_dataset(name, data=array.astype(str).astype(object),
                                 dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=array)


def _read_all(path) -> dict[str, np.ndarray]:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            if h5py.check_string_dtype(obj.dtype) is not None:
                out[name] = np.array(obj.asstr()[()], dtype=object)
            else:
                out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _flip_middle_of(path, dataset: str) -> None:
    """Invert bytes in the middle of the first chunk of ``dataset``, in place (same size)."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    offset = info.byte_offset + info.size // 2
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(8)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def test_every_dataset_is_chunked_with_a_checksum_and_values_are_unchanged(tmp_path):
    arrays = _arrays()
    write_shard(tmp_path / "shard.h5", arrays, {"identity": {"a": 1}})
    _write_unfiltered(tmp_path / "plain.h5", arrays)
    with h5py.File(tmp_path / "shard.h5") as f:
        datasets = []
        f.visititems(lambda name, obj: datasets.append(obj)
                     if isinstance(obj, h5py.Dataset) else None)
        assert len(datasets) == len(arrays)
        for ds in datasets:
            assert ds.chunks is not None and ds.fletcher32, ds.name
    ours, plain = _read_all(tmp_path / "shard.h5"), _read_all(tmp_path / "plain.h5")
    assert ours.keys() == plain.keys()
    for name, values in plain.items():
        assert ours[name].dtype.kind == values.dtype.kind, name
        np.testing.assert_array_equal(ours[name], values, err_msg=name)
    # the reader gives strings back as str, as before
    reasons = next(iter_shards([tmp_path / "shard.h5"], ["failed/reason"]))["failed/reason"]
    assert list(reasons) == list(arrays["failed/reason"])


def test_bytes_changed_in_place_are_detected_by_every_reader(tmp_path):
    good, bad = tmp_path / "shard-00000.h5", tmp_path / "shard-00001.h5"
    write_shard(good, _arrays(0), {})
    write_shard(bad, _arrays(1), {})
    _write_unfiltered(tmp_path / "plain.h5", _arrays(1))
    size = bad.stat().st_size
    _flip_middle_of(bad, "codes")
    assert bad.stat().st_size == size
    # what a shard without checksums does: the damage reads as data, silently
    with h5py.File(tmp_path / "plain.h5") as f:
        offset = f["codes"].id.get_offset() + f["codes"].id.get_storage_size() // 2
    with open(tmp_path / "plain.h5", "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 8)
    with h5py.File(tmp_path / "plain.h5") as f:
        assert not np.array_equal(f["codes"][()], _arrays(1)["codes"])

    message = f"shard {bad} is damaged.*Delete it and rerun"
    with pytest.raises(ShardCorruptError, match=message):
        list(iter_shards([good, bad], ["codes"]))
    with pytest.raises(ShardCorruptError, match=message):
        read_concat([good, bad], "codes")
    # other datasets of the damaged file still read (the checksum is per chunk)
    np.testing.assert_array_equal(read_concat([bad], "index"), _arrays(1)["index"])
    with pytest.raises(ShardCorruptError, match=str(bad)):
        verify_shards([good, bad])
    verify_shards([good])


def test_a_truncated_shard_names_the_file(tmp_path):
    path = tmp_path / "shard-00003.h5"
    write_shard(path, _arrays(), {"identity": {"a": 1}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for read in (lambda: read_attrs(path), lambda: list(iter_shards([path], ["index"]))):
        with pytest.raises(ShardCorruptError, match=f"shard {path} is damaged.*Delete it"):
            read()


def test_verify_reports_every_damaged_shard_at_once(tmp_path):
    paths = [tmp_path / f"shard-{i:05d}.h5" for i in range(3)]
    for i, path in enumerate(paths):
        write_shard(path, _arrays(i), {})
    _flip_middle_of(paths[0], "layers/conv1/max")
    paths[2].write_bytes(paths[2].read_bytes()[:1000])
    with pytest.raises(ShardCorruptError) as excinfo:
        verify_shards(paths)
    message = str(excinfo.value)
    assert message.startswith("2 shard file(s) are damaged")
    assert str(paths[0]) in message and str(paths[2]) in message
    assert str(paths[1]) not in message
    assert "Delete them and rerun" in message
