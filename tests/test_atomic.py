"""Atomic writes: a file appears whole under its name or not at all."""

import json
import zipfile

import pytest
import torch
from PIL import Image

from convscope.store.atomic import atomic_path, remove_stale_temporaries, save_image, write_json, write_text


def test_written_file_appears_only_on_success(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("a,b\n")
        assert not target.exists() and tmp.parent == target.parent and tmp.name.startswith(".")
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target, fsync=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_keep_name_writes_under_the_targets_own_name(tmp_path):
    """torch.save names the archive inside the file after the file: the bytes must not
    depend on a temporary name."""
    target = tmp_path / "weights.pt"
    with atomic_path(target, keep_name=True) as tmp:
        assert tmp.name == "weights.pt" and tmp.parent != tmp_path
        torch.save({"w": torch.arange(3)}, tmp)
    with zipfile.ZipFile(target) as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"weights"}
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]
    assert torch.equal(torch.load(target)["w"], torch.arange(3))


def test_text_json_and_image_writers(tmp_path):
    write_text(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"k": [1, 2]})
    save_image(tmp_path / "c.png", Image.new("RGB", (3, 2), (10, 20, 30)))
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert json.loads((tmp_path / "b.json").read_text()) == {"k": [1, 2]}
    assert Image.open(tmp_path / "c.png").getpixel((2, 1)) == (10, 20, 30)


def test_stale_temporaries_of_a_killed_job_are_removed(tmp_path):
    (tmp_path / ".shard.h5.tmp-123").write_text("partial")
    (tmp_path / ".other.h5.tmp-9").write_text("someone else's")
    remove_stale_temporaries(tmp_path / "shard.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.h5.tmp-9"]
