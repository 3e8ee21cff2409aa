"""Tests for convscope.data.manifest: folder, table and array datasets -> one manifest."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from convscope.config import validate_config
from convscope.config.sections import DatasetConfig
from convscope.data.images import load_image
from convscope.data.manifest import (
    DATASET_KINDS,
    MANIFEST_COLUMNS,
    DatasetError,
    KNOWN_SPLITS,
    build_manifest,
    check_labels,
    classes_path,
    dataset_manifest,
    load_class_names,
    read_class_names,
    read_manifest,
    write_dataset_manifest,
    write_manifest,
)


def dataset_cfg(**values) -> DatasetConfig:
    """A validated ``dataset`` section with ``values`` set (defaults from the schema)."""
    return DatasetConfig.from_dict(validate_config({"dataset": values})["dataset"])


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)
    return path


def _check_common(manifest: pd.DataFrame) -> None:
    assert tuple(manifest.columns[:5]) == MANIFEST_COLUMNS
    np.testing.assert_array_equal(manifest["index"].to_numpy(), np.arange(len(manifest)))
    assert manifest["slot"].dtype == np.int64 and manifest["label"].dtype == np.int64
    assert all(isinstance(p, str) and os.path.isabs(p) for p in manifest["path"])


# --------------------------------------------------------------------------
# folder


def test_folder(tmp_path):
    root = tmp_path / "data"
    _png(root / "dog" / "b.png")
    _png(root / "dog" / "nested" / "deeper" / "a.JPG".lower()).rename(root / "dog" / "nested" / "deeper" / "a.JPG")
    _png(root / "cat" / "z.png")
    _png(root / "cat" / "a.PNG".lower()).rename(root / "cat" / "a.PNG")
    (root / "cat" / "notes.txt").write_text("not an image")
    _png(root / "cat" / ".hidden.png")
    _png(root / "loose.png")  # not inside a class folder: ignored
    (root / "empty_class").mkdir()

    manifest, class_names = build_manifest("folder", root)
    _check_common(manifest)
    assert class_names == ["cat", "dog", "empty_class"]
    relative = [os.path.relpath(p, root) for p in manifest["path"]]
    assert relative == ["cat/a.PNG", "cat/z.png", "dog/b.png", os.path.join("dog", "nested", "deeper", "a.JPG")]
    assert manifest["label"].tolist() == [0, 0, 1, 1]
    assert set(manifest["split"]) == {"all"}
    assert (manifest["slot"] == -1).all()
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)


def test_folder_extensions_and_errors(tmp_path):
    root = tmp_path / "data"
    _png(root / "a" / "x.png")
    manifest, _ = build_manifest("folder", root, extensions=["PNG"])
    assert len(manifest) == 1
    with pytest.raises(DatasetError, match="no images with extensions .jpg"):
        build_manifest("folder", root, extensions=(".jpg",))
    with pytest.raises(DatasetError, match="no class subfolders"):
        build_manifest("folder", root / "a")
    with pytest.raises(DatasetError, match="does not exist"):
        build_manifest("folder", tmp_path / "nowhere")


# --------------------------------------------------------------------------
# tables


def test_csv_with_string_labels_and_relative_paths(tmp_path):
    _png(tmp_path / "imgs" / "0.png")
    _png(tmp_path / "imgs" / "1.png")
    absolute = str(_png(tmp_path / "elsewhere" / "2.png"))
    table = pd.DataFrame(
        {
            "path": ["imgs/0.png", "./imgs/1.png", absolute],
            "label": ["zebra", "ant", None],
            "split": ["train", "test", None],
            "weather": ["sunny", "rain", "sunny"],
            "size": [1.5, 2.5, 3.0],
            "count": [1, 2, 3],
        }
    )
    table.to_csv(tmp_path / "m.csv", index=False)
    manifest, class_names = build_manifest("manifest", str(tmp_path / "m.csv"))
    _check_common(manifest)
    assert class_names == ["ant", "zebra"]
    assert manifest["label"].tolist() == [1, 0, -1]
    assert manifest["split"].tolist() == ["train", "test", "all"]
    assert manifest["path"].tolist() == [
        str(tmp_path / "imgs" / "0.png"),
        str(tmp_path / "imgs" / "1.png"),
        absolute,
    ]
    assert list(manifest.columns[5:]) == ["weather", "size", "count"]
    assert manifest["size"].dtype == np.float64 and manifest["count"].dtype == np.int64
    assert manifest["weather"].tolist() == ["sunny", "rain", "sunny"]
    for path in manifest["path"]:
        assert load_image(path).shape == (4, 4, 3)


def test_csv_integer_labels_and_class_files(tmp_path):
    table = pd.DataFrame({"file": ["a.png", "b.png", "c.png"], "y": [2, 0, np.nan]})
    table.to_csv(tmp_path / "m.csv", index=False)
    manifest, class_names = build_manifest("manifest", tmp_path / "m.csv", label_column="y", path_column="file")
    assert manifest["label"].tolist() == [2, 0, -1]
    assert class_names == ["0", "1", "2"]
    assert set(manifest["split"]) == {"all"}

    (tmp_path / "classes.json").write_text(json.dumps(["cat", "dog", "emu", "fox"]))
    _, class_names = build_manifest("manifest", tmp_path / "m.csv", label_column="y", path_column="file")
    assert class_names == ["cat", "dog", "emu", "fox"]

    (tmp_path / "m.classes.json").write_text(json.dumps(["x", "y"]))  # <stem>.classes.json wins
    with pytest.raises(DatasetError, match="label 2 is out of range"):
        build_manifest("manifest", tmp_path / "m.csv", label_column="y", path_column="file")


def test_string_labels_follow_a_class_file(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["dog", "cat"]}).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "m.classes.json").write_text(json.dumps(["dog", "cat"]))
    manifest, class_names = build_manifest("manifest", tmp_path / "m.csv")
    assert class_names == ["dog", "cat"] and manifest["label"].tolist() == [0, 1]
    (tmp_path / "m.classes.json").write_text(json.dumps(["dog"]))
    with pytest.raises(DatasetError, match="'cat'.*not among the class names"):
        build_manifest("manifest", tmp_path / "m.csv")


def test_parquet_keeps_dtypes(tmp_path):
    table = pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png"],
            "label": ["b", "a", "b"],
            "weather": pd.Categorical(["sun", "rain", "sun"]),
            "flag": [True, False, True],
            "index": [10, 11, 12],  # collides with the manifest's own index
        }
    )
    table.to_parquet(tmp_path / "m.parquet")
    manifest, class_names = build_manifest("manifest", tmp_path / "m.parquet")
    _check_common(manifest)
    assert class_names == ["a", "b"] and manifest["label"].tolist() == [1, 0, 1]
    assert isinstance(manifest["weather"].dtype, pd.CategoricalDtype)
    assert manifest["flag"].dtype == bool
    assert manifest["source_index"].tolist() == [10, 11, 12]
    assert manifest["index"].tolist() == [0, 1, 2]


def test_unlabelled_table_and_slot_column(tmp_path):
    np.savez(tmp_path / "arr.npz", images=np.zeros((3, 4, 4), np.uint8))
    pd.DataFrame({"path": ["arr.npz", "arr.npz"], "slot": [2, 0]}).to_csv(tmp_path / "m.csv", index=False)
    manifest, class_names = build_manifest("manifest", tmp_path / "m.csv", label_column=None)
    assert class_names == [] and manifest["label"].tolist() == [-1, -1]
    assert manifest["slot"].tolist() == [2, 0]
    assert load_image(manifest["path"][0], manifest["slot"][0]).shape == (4, 4, 3)


def test_table_errors(tmp_path):
    pd.DataFrame({"path": ["a.png"], "klass": ["x"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DatasetError, match=r"no label column 'label'; columns present: path, klass"):
        build_manifest("manifest", tmp_path / "m.csv")
    with pytest.raises(DatasetError, match=r"no path column 'file'; columns present: path, klass"):
        build_manifest("manifest", tmp_path / "m.csv", path_column="file")

    pd.DataFrame({"path": [], "label": []}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DatasetError, match="no images"):
        build_manifest("manifest", tmp_path / "empty.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        build_manifest("manifest", tmp_path / "blank.csv")

    pd.DataFrame({"path": ["a.png"], "label": [1.5]}).to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DatasetError, match="integer ids"):
        build_manifest("manifest", tmp_path / "f.csv")

    (tmp_path / "m.txt").write_text("path\na.png\n")
    with pytest.raises(DatasetError, match=r"suffix \.csv"):
        build_manifest("manifest", tmp_path / "m.txt")


# --------------------------------------------------------------------------
# arrays


def test_npz_with_labels(tmp_path):
    np.savez(
        tmp_path / "a.npz",
        images=np.zeros((4, 5, 5, 3), np.uint8),
        labels=np.array([1, 0, 1, 2]),
        blur=np.array([0.1, 0.2, 0.3, 0.4]),
    )
    manifest, class_names = build_manifest("array", tmp_path / "a.npz")
    _check_common(manifest)
    assert manifest["path"].tolist() == [str(tmp_path / "a.npz")] * 4
    assert manifest["slot"].tolist() == [0, 1, 2, 3]
    assert manifest["label"].tolist() == [1, 0, 1, 2]
    assert class_names == ["0", "1", "2"]
    assert manifest["blur"].tolist() == [0.1, 0.2, 0.3, 0.4]
    assert set(manifest["split"]) == {"all"}


def test_npz_without_labels_and_string_labels(tmp_path):
    np.savez(tmp_path / "u.npz", images=np.zeros((2, 5, 5), np.uint8))
    manifest, class_names = build_manifest("array", tmp_path / "u.npz")
    assert manifest["label"].tolist() == [-1, -1] and class_names == []

    np.savez(tmp_path / "s.npz", images=np.zeros((3, 5, 5), np.uint8), labels=np.array([b"owl", b"cat", b"owl"]))
    manifest, class_names = build_manifest("array", tmp_path / "s.npz")
    assert class_names == ["cat", "owl"] and manifest["label"].tolist() == [1, 0, 1]


def test_h5_with_labels_split_and_class_names(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((3, 6, 6, 4), np.uint8)
        f["labels"] = np.array([0, 1, 1], dtype=np.int32)
        f["class_names"] = np.array([b"left", b"right"])
        f["split"] = np.array(["train", "test", "train"], dtype=h5py.string_dtype())
        f["depth"] = np.arange(3, dtype=np.int16)
        f["meta/ignored"] = np.zeros(3)
    manifest, class_names = build_manifest("array", path)
    _check_common(manifest)
    assert class_names == ["left", "right"]
    assert manifest["label"].tolist() == [0, 1, 1]
    assert manifest["split"].tolist() == ["train", "test", "train"]
    assert manifest["depth"].tolist() == [0, 1, 2]
    assert load_image(manifest["path"][2], manifest["slot"][2]).shape == (6, 6, 3)


def test_array_errors(tmp_path):
    np.savez(tmp_path / "k.npz", pixels=np.zeros((2, 3, 3), np.uint8), labels=np.zeros(2))
    with pytest.raises(DatasetError, match="no 'images' array; keys present: pixels, labels"):
        build_manifest("array", tmp_path / "k.npz")
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f["pics"] = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(DatasetError, match="no 'images' array; keys present: pics"):
        build_manifest("array", tmp_path / "k.h5")
    np.savez(tmp_path / "z.npz", images=np.zeros((0, 3, 3), np.uint8))
    with pytest.raises(DatasetError, match="no images"):
        build_manifest("array", tmp_path / "z.npz")
    np.savez(tmp_path / "c.npz", images=np.zeros((2, 3, 3, 2), np.uint8))
    with pytest.raises(DatasetError, match="C in 1, 3, 4"):
        build_manifest("array", tmp_path / "c.npz")
    np.savez(tmp_path / "l.npz", images=np.zeros((2, 3, 3), np.uint8), labels=np.zeros(3))
    with pytest.raises(DatasetError, match=r"'labels' has shape \(3,\); expected \(2,\)"):
        build_manifest("array", tmp_path / "l.npz")


# --------------------------------------------------------------------------
# kinds, round trip


def test_unknown_kind(tmp_path):
    with pytest.raises(DatasetError, match="valid kinds: folder, manifest, array"):
        build_manifest("imagenet", tmp_path)
    assert DATASET_KINDS == ("folder", "manifest", "array", "webdataset", "huggingface")


def test_write_read_roundtrip(tmp_path):
    table = pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png"],
            "label": ["x", "y", None],
            "split": ["train", "test", "train"],
            "note": ["a, with comma", "b", "c"],
            "score": [0.5, 1.25, -3.0],
        }
    )
    table.to_csv(tmp_path / "in.csv", index=False)
    manifest, class_names = build_manifest("manifest", tmp_path / "in.csv")
    write_manifest(manifest, class_names, tmp_path / "out" / "manifest.csv")
    assert json.loads((tmp_path / "out" / "manifest.classes.json").read_text()) == ["x", "y"]
    again, names = read_manifest(tmp_path / "out" / "manifest.csv")
    assert names == class_names
    pd.testing.assert_frame_equal(again, manifest, check_dtype=False)
    assert again["label"].dtype == np.int64 and again["slot"].dtype == np.int64
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_read_manifest_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    pd.DataFrame({"path": ["a"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DatasetError, match="m.classes.json"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.classes.json").write_text("[]")
    with pytest.raises(DatasetError, match=r"lacks the manifest columns \['index', 'slot', 'label', 'split'\]"):
        read_manifest(tmp_path / "m.csv")


def test_write_to_declared_paths(tmp_path):
    table = pd.DataFrame({"path": ["b.png", "a.png"], "label": ["y", "x"], "depth": [2.5, 1.0]})
    table.to_csv(tmp_path / "in.csv", index=False)
    manifest, class_names = build_manifest("manifest", tmp_path / "in.csv")
    csv, classes = tmp_path / "out" / "m.csv", tmp_path / "elsewhere" / "names.json"
    write_manifest(manifest, class_names, csv, classes)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.csv"]
    assert classes.read_text() == '[\n "x",\n "y"\n]\n'
    expected_csv = (
        "index,path,slot,label,split,depth\n"
        f"0,{tmp_path / 'b.png'},-1,1,all,2.5\n"
        f"1,{tmp_path / 'a.png'},-1,0,all,1.0\n"
    )
    assert csv.read_text() == expected_csv
    with pytest.raises(DatasetError, match="m.classes.json"):
        read_manifest(csv)
    again, names = read_manifest(csv, classes)
    assert names == ["x", "y"] and again["label"].tolist() == [1, 0]


def test_classes_path_is_next_to_the_manifest(tmp_path):
    assert classes_path(tmp_path / "results" / "manifest.csv") == tmp_path / "results" / "manifest.classes.json"


def test_class_name_files(tmp_path):
    forms = {
        "list.json": ["cat", "dog"],
        "wrapped.json": {"classes": ["cat", "dog"]},
        "by_id.json": {"1": "dog", "0": "cat"},
    }
    for name, value in forms.items():
        (tmp_path / name).write_text(json.dumps(value))
        assert read_class_names(tmp_path / name) == ["cat", "dog"], name
    (tmp_path / "gap.json").write_text(json.dumps({"0": "cat", "2": "dog"}))
    with pytest.raises(DatasetError, match="without gaps"):
        read_class_names(tmp_path / "gap.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read class names"):
        read_class_names(tmp_path / "bad.json")


def test_dataset_manifest_from_the_config_section(tmp_path):
    _png(tmp_path / "root" / "owl" / "1.png")
    _png(tmp_path / "root" / "bat" / "2.png")
    manifest, class_names = dataset_manifest(dataset_cfg(kind="folder", path="unused"), tmp_path / "root")
    assert class_names == ["bat", "owl"] and manifest["label"].tolist() == [0, 1]

    # A demo dataset is read as the table the demo generator wrote; the
    # section's column names apply to it as to any manifest table.
    pd.DataFrame({"file": ["images/0.png", "images/1.png"], "y": ["b", "a"], "hue": [10.0, 20.0]}
                 ).to_csv(tmp_path / "demo.csv", index=False)
    demo = dataset_cfg(kind="demo", path_column="file", label_column="y")
    csv, classes = tmp_path / "results" / "manifest.csv", tmp_path / "results" / "manifest.classes.json"
    written, class_names = write_dataset_manifest(demo, tmp_path / "demo.csv", csv, classes)
    assert class_names == ["a", "b"]
    assert json.loads(classes.read_text()) == ["a", "b"]
    again, names = read_manifest(csv)
    assert names == ["a", "b"]
    assert again["path"].tolist() == [str(tmp_path / "images" / "0.png"), str(tmp_path / "images" / "1.png")]
    assert again["label"].tolist() == [1, 0] and again["hue"].tolist() == [10.0, 20.0]
    pd.testing.assert_frame_equal(again, written, check_dtype=False)


# --------------------------------------------------------------------------
# class names in the model's output order (dataset.class_names)

MODEL_ORDER = ["zebra", "cat", "yak", "ant"]  # deliberately not alphabetical


def _ids_by_hand(labels, names):
    """Expected ids: each label's position in ``names`` (-1 for a missing label)."""
    return [names.index(label) if isinstance(label, str) else -1 for label in labels]


def test_string_labels_follow_the_configured_class_list(tmp_path):
    labels = ["yak", "zebra", None, "ant", "yak", "cat"]
    pd.DataFrame({"path": [f"{i}.png" for i in range(6)], "label": labels}).to_csv(
        tmp_path / "m.csv", index=False)
    (tmp_path / "m.classes.json").write_text(json.dumps(sorted(MODEL_ORDER)))  # the list wins
    for given in (MODEL_ORDER, tmp_path / "names.txt"):
        (tmp_path / "names.txt").write_text("\n".join(MODEL_ORDER) + "\n\n")
        manifest, class_names = build_manifest("manifest", tmp_path / "m.csv", class_names=given,
                                               names_required=True)
        assert class_names == MODEL_ORDER
        assert manifest["label"].tolist() == _ids_by_hand(labels, MODEL_ORDER)


def test_integer_labels_get_the_configured_names(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [3, 0, 1]}).to_csv(
        tmp_path / "m.csv", index=False)
    csv, classes = tmp_path / "out" / "manifest.csv", tmp_path / "out" / "manifest.classes.json"
    cfg = dataset_cfg(kind="manifest", path="unused", class_names=MODEL_ORDER)
    write_dataset_manifest(cfg, tmp_path / "m.csv", csv, classes, names_required=True)
    manifest, names = read_manifest(csv, classes)
    assert names == MODEL_ORDER and manifest["label"].tolist() == [3, 0, 1]
    assert [names[i] for i in manifest["label"]] == ["ant", "zebra", "cat"]
    short = dataset_cfg(kind="manifest", path="unused", class_names=["zebra", "cat"])
    with pytest.raises(DatasetError, match="label 3 is out of range for the 2 class names"):
        dataset_manifest(short, tmp_path / "m.csv")


def test_unknown_names_are_refused_naming_them(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": ["cat", "gnu", "emu"]}).to_csv(
        tmp_path / "m.csv", index=False)
    for check in (lambda: build_manifest("manifest", tmp_path / "m.csv", class_names=MODEL_ORDER),
                  lambda: check_labels("manifest", tmp_path / "m.csv", class_names=MODEL_ORDER)):
        with pytest.raises(DatasetError, match=r"labels 'emu', 'gnu' are not among the class names"):
            check()


def test_names_without_a_class_list_are_refused_when_required(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["dog", "cat"]}).to_csv(
        tmp_path / "m.csv", index=False)
    with pytest.raises(DatasetError, match=r"class names \('cat', 'dog'\).*dataset.class_names is not set"):
        check_labels("manifest", tmp_path / "m.csv", names_required=True)
    # a model trained by the workflow on these labels numbers them itself: sorted
    manifest, names = build_manifest("manifest", tmp_path / "m.csv")
    assert names == ["cat", "dog"] and manifest["label"].tolist() == [1, 0]


def test_a_column_mixing_names_and_ids_is_refused(tmp_path):
    pd.DataFrame({"path": ["a.png", "b.png", "c.png", "d.png"], "label": ["cat", "1", "dog", "0"]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    message = r"mixes class names \('cat', 'dog'\) and integer ids \('0', '1'\)"
    with pytest.raises(DatasetError, match=message):
        build_manifest("manifest", tmp_path / "m.csv")
    with pytest.raises(DatasetError, match=message):
        check_labels("manifest", tmp_path / "m.csv", class_names=["cat", "dog"])
    # ids written as text (an object column of digits) are ids, not names
    pd.DataFrame({"path": ["a.png", "b.png"], "label": ["2", "0"]}).to_parquet(tmp_path / "t.parquet")
    manifest, names = build_manifest("manifest", tmp_path / "t.parquet", class_names=MODEL_ORDER)
    assert manifest["label"].tolist() == [2, 0] and names == MODEL_ORDER


def test_parquet_categorical_labels(tmp_path):
    values = ["yak", "ant", "yak", None, "zebra"]
    categories = ["yak", "zebra", "ant"]  # the categorical's own order
    pd.DataFrame({"path": [f"{i}.png" for i in range(5)],
                  "label": pd.Categorical(values, categories=categories)}).to_parquet(tmp_path / "m.parquet")
    manifest, names = build_manifest("manifest", tmp_path / "m.parquet", class_names=MODEL_ORDER)
    assert names == MODEL_ORDER and manifest["label"].tolist() == _ids_by_hand(values, MODEL_ORDER)
    with pytest.raises(DatasetError, match="dataset.class_names is not set"):
        build_manifest("manifest", tmp_path / "m.parquet", names_required=True)
    # no list, a model trained here: the categorical's own order gives the ids
    manifest, names = build_manifest("manifest", tmp_path / "m.parquet")
    assert names == categories and manifest["label"].tolist() == _ids_by_hand(values, categories)


def test_folder_and_array_labels_through_the_class_list(tmp_path):
    for name in ("cat", "ant"):
        _png(tmp_path / "root" / name / "1.png")
    manifest, names = build_manifest("folder", tmp_path / "root", class_names=MODEL_ORDER)
    assert names == MODEL_ORDER
    assert manifest["label"].tolist() == [MODEL_ORDER.index("ant"), MODEL_ORDER.index("cat")]
    _png(tmp_path / "root" / "gnu" / "1.png")
    with pytest.raises(DatasetError, match="class folders 'gnu' are not among"):
        check_labels("folder", tmp_path / "root", class_names=MODEL_ORDER)

    labels = np.array(["cat", "yak", "zebra"])
    np.savez(tmp_path / "a.npz", images=np.zeros((3, 4, 4), np.uint8), labels=labels,
             class_names=np.array(sorted(MODEL_ORDER)))  # the config's list wins over the file's
    manifest, names = build_manifest("array", tmp_path / "a.npz", class_names=MODEL_ORDER)
    assert manifest["label"].tolist() == _ids_by_hand(list(labels), MODEL_ORDER)


def test_class_list_files_and_their_errors(tmp_path):
    (tmp_path / "ok.txt").write_text("n01 tench\n\n  goldfish \n")
    assert load_class_names(tmp_path / "ok.txt") == ["n01 tench", "goldfish"]
    assert load_class_names(None) is None
    with pytest.raises(DatasetError, match=r"'dataset.class_names': class list .*gone.txt does not exist"):
        load_class_names(tmp_path / "gone.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DatasetError, match="holds no class names"):
        load_class_names(tmp_path / "empty.txt")
    with pytest.raises(DatasetError, match=r"\['cat'\] more than once"):
        load_class_names(["cat", "dog", "cat"])


# --------------------------------------------------------------------------
# reserved column names


def test_user_slot_column_is_an_attribute_for_image_files(tmp_path, capsys):
    _png(tmp_path / "a.png")
    table = pd.DataFrame({"path": ["a.png", "a.png"], "label": [0, 1], "slot": [7, 3],
                          "index": [5, 6]})
    table.to_csv(tmp_path / "m.csv", index=False)
    csv, classes = tmp_path / "out" / "manifest.csv", tmp_path / "out" / "classes.json"
    write_dataset_manifest(dataset_cfg(kind="manifest", path="unused"), tmp_path / "m.csv", csv, classes)
    manifest, _ = read_manifest(csv, classes)
    assert manifest["slot"].tolist() == [-1, -1]  # image files, read as such
    assert manifest["source_slot"].tolist() == [7, 3] and manifest["source_index"].tolist() == [5, 6]
    printed = capsys.readouterr().out
    assert "column 'slot' is kept as attribute 'source_slot'" in printed
    assert "column 'index' is kept as attribute 'source_index'" in printed
    assert load_image(manifest["path"][0], manifest["slot"][0]).shape == (4, 4, 3)


def test_slot_column_of_array_rows(tmp_path):
    np.savez(tmp_path / "arr.npz", images=np.zeros((3, 4, 4), np.uint8))
    _png(tmp_path / "b.png")
    pd.DataFrame({"path": ["arr.npz", "b.png"], "slot": [2, None]}).to_csv(tmp_path / "m.csv", index=False)
    manifest, _ = build_manifest("manifest", tmp_path / "m.csv", label_column=None)
    assert manifest["slot"].tolist() == [2, -1] and "source_slot" not in manifest.columns
    pd.DataFrame({"path": ["arr.npz", "arr.npz"], "slot": [1, None]}).to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(DatasetError, match=r"column 'slot' must hold the integer row.*rows \[1\]"):
        build_manifest("manifest", tmp_path / "n.csv", label_column=None)
    pd.DataFrame({"path": ["arr.npz"]}).to_csv(tmp_path / "o.csv", index=False)
    with pytest.raises(DatasetError, match=r"rows \[0\] name array files, which need a 'slot' column"):
        build_manifest("manifest", tmp_path / "o.csv", label_column=None)


def test_split_column_with_other_values_is_an_attribute(tmp_path):
    splits = ["A", "B", "A"]
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [0, 1, 0], "split": splits}).to_csv(
        tmp_path / "m.csv", index=False)
    manifest, _ = build_manifest("manifest", tmp_path / "m.csv")
    assert manifest["split"].tolist() == ["all"] * 3 and manifest["source_split"].tolist() == splits
    assert any("'split' is kept as attribute 'source_split'" in n for n in manifest.attrs["notes"])
    known = ["train", "val", None]
    assert set(known[:2]) <= set(KNOWN_SPLITS)
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [0, 1, 0], "split": known}).to_csv(
        tmp_path / "k.csv", index=False)
    manifest, _ = build_manifest("manifest", tmp_path / "k.csv")
    assert manifest["split"].tolist() == ["train", "val", "all"] and manifest.attrs["notes"] == []

    np.savez(tmp_path / "a.npz", images=np.zeros((3, 4, 4), np.uint8), split=np.array(splits),
             slot=np.array([9, 8, 7]))
    manifest, _ = build_manifest("array", tmp_path / "a.npz")
    assert manifest["split"].tolist() == ["all"] * 3 and manifest["source_split"].tolist() == splits
    assert manifest["slot"].tolist() == [0, 1, 2] and manifest["source_slot"].tolist() == [9, 8, 7]
