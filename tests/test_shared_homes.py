"""The one home of each shared idea: summary.json, HDF5 outputs, SHA-256, the stage model,
the readable-image sampler and image-to-uint8."""

import hashlib
import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from convscope.data.sample import readable_sample
from convscope.nn.device import DeviceError
from convscope.nn.models import load_stage_model
from convscope.render.grids import to_uint8
from convscope.store.h5 import write_h5
from convscope.store.hashes import cached_sha256, file_sha256
from convscope.store.summary import (SummaryError, figure_entry, read_summary, stage_summary,
                                     write_summary)
from synthesis_helpers import demo_weights, sections


def test_summary_is_written_in_schema_order_with_text_values(tmp_path):
    path = tmp_path / "stage" / "summary.json"
    (tmp_path / "stage" / "panels").mkdir(parents=True)
    figure = figure_entry(tmp_path / "stage" / "panels" / "a.png", tmp_path / "stage", "A", "a")
    written = write_summary(path, "explain_x", "Title", "Caption.",
                            numbers={"images": 3, "ratio": "0.50"}, figures=[figure])
    expected = {"stage": "explain_x", "title": "Title", "caption": "Caption.",
                "numbers": [{"label": "images", "value": "3"},
                            {"label": "ratio", "value": "0.50"}],
                "figures": [{"path": "panels/a.png", "title": "A", "caption": "a"}],
                "tables": []}
    assert written == expected
    assert path.read_text() == json.dumps(expected, indent=2) + "\n"
    assert list(json.loads(path.read_text())) == list(expected)
    assert read_summary(path) == expected


def test_summary_numbers_as_pairs_and_units_only_when_given():
    pairs = stage_summary("s", "t", "c", numbers=[("a", 1), ("b", 2.5)])
    assert pairs["numbers"] == [{"label": "a", "value": "1"}, {"label": "b", "value": "2.5"}]
    assert "units" not in pairs
    units = {"relu1": {"3": [{"path": "u.png", "title": "", "caption": ""}]}}
    assert stage_summary("s", "t", "c", units=units)["units"] == units
    assert stage_summary("s", "t", "c", units={})["units"] == {}


def test_writer_and_reader_refuse_the_same_summaries(tmp_path):
    path = tmp_path / "summary.json"
    with pytest.raises(SummaryError, match=r"summary.json: stage summary without caption"):
        write_summary(path, "explain_x", "Title", "")
    assert not path.exists()
    with pytest.raises(SummaryError, match=r"figures\[0\] must be an object with a 'path'"):
        write_summary(path, "explain_x", "Title", "Caption", figures=[{"title": "no path"}])
    path.write_text(json.dumps({"stage": "explain_x", "title": "Title"}))
    with pytest.raises(SummaryError, match=r"summary.json: stage summary without caption"):
        read_summary(path)
    path.write_text(json.dumps({"stage": "s", "title": "t", "caption": "c",
                                "units": {"relu1": {"0": [{"caption": "x"}]}}}))
    with pytest.raises(SummaryError, match=r"units\['relu1'\]\['0'\]\[0\]"):
        read_summary(path)


def test_write_h5_arrays_text_groups_and_attributes(tmp_path):
    path = tmp_path / "out.h5"
    write_h5(path, {"images": np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3),
                    "loss/style": np.array([0.5, 0.25]),
                    "layers": np.array(["relu1", "relu2"]),
                    "names": np.array(["ä", "b"], dtype=object)},
             attrs={"note": "pixels 0..1", "epsilon": 0.03})
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["images"][()], np.arange(12).reshape(1, 2, 2, 3))
        assert f["images"].dtype == np.uint8
        np.testing.assert_array_equal(f["loss"]["style"][()], [0.5, 0.25])
        assert [v.decode() for v in f["layers"][()]] == ["relu1", "relu2"]
        assert [v.decode() for v in f["names"][()]] == ["ä", "b"]
        assert f.attrs["note"] == "pixels 0..1" and f.attrs["epsilon"] == 0.03
    assert sorted(os.listdir(tmp_path)) == ["out.h5"]  # no temporary left


def test_file_sha256_follows_the_content_and_matches_the_disk_cache(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"first")
    assert file_sha256(path) == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second version")  # new size and change time: hashed again
    assert file_sha256(path) == hashlib.sha256(b"second version").hexdigest()
    cache = tmp_path / "cache.json"
    assert cached_sha256(path, cache) == hashlib.sha256(b"second version").hexdigest()
    assert list(json.loads(cache.read_text()).values())[0]["sha256"] == file_sha256(path)


def test_to_uint8_rounds_half_to_even_and_clips():
    values = np.array([-0.1, 0.0, 0.25, 0.5, 1.0, 1.2], np.float32)
    # 0.25 * 255 = 63.75 -> 64; 0.5 * 255 = 127.5 -> 128 (the even neighbour)
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 64, 128, 255, 255])
    assert to_uint8(np.zeros((2, 3, 3, 1))).shape == (2, 3, 3, 1)


def _manifest(tmp_path, unreadable: set[int]) -> pd.DataFrame:
    rows = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        if i in unreadable:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(np.full((4, 4, 3), i * 10, np.uint8)).save(path)
        rows.append({"index": i, "path": str(path), "slot": -1})
    return pd.DataFrame(rows)


def test_readable_sample_takes_the_first_readable_of_a_seeded_permutation(tmp_path):
    manifest = _manifest(tmp_path, unreadable={1, 5})
    order = np.random.default_rng(7).permutation(8)
    expected = [int(i) for i in order if i not in (1, 5)][:3]
    chosen, images = readable_sample(manifest, 3, seed=7)
    assert chosen["index"].tolist() == expected
    assert [int(image[0, 0, 0]) for image in images] == [10 * i for i in expected]
    everything, _ = readable_sample(manifest, 20, seed=7)
    assert sorted(everything["index"]) == [0, 2, 3, 4, 6, 7]


def test_stage_model_is_frozen_in_eval_mode_on_the_named_device(tmp_path):
    model_cfg, preprocess, _ = sections()
    model, device = load_stage_model(model_cfg, demo_weights(tmp_path / "w.pt"), preprocess,
                                     "cpu", key="explain.device")
    assert device == torch.device("cpu") and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    torch.testing.assert_close(model.state_dict()["fc.weight"], state["fc.weight"])
    with pytest.raises(DeviceError, match="config key 'explain.device' is 'cuda:99'"):
        load_stage_model(model_cfg, tmp_path / "w.pt", preprocess, "cuda:99",
                         key="explain.device")
