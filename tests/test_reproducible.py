"""The same config in two folders writes the same results (reports, benchmarks, logs aside)."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY_CONFIG, h5_datasets, run_snakemake

#: Folders of results/ whose files may differ between runs: the report (it shows the
#: benchmark timings) and the Snakemake benchmark files (wall-clock time). Logs are in
#: logs/, outside results/.
RUN_DEPENDENT = ("report", "benchmarks")


def result_files(workdir: Path) -> list[str]:
    """The files under ``workdir/results`` outside `RUN_DEPENDENT`, relative, sorted."""
    root = workdir / "results"
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return sorted(f for f in files if f.split("/")[0] not in RUN_DEPENDENT)


def h5_attributes(path) -> dict[str, dict]:
    """The attributes of the file and of every group and dataset, by path."""
    found = {}

    def visit(name, obj):
        found[name] = dict(obj.attrs)

    with h5py.File(path, "r") as f:
        found["/"] = dict(f.attrs)
        f.visititems(visit)
    return found


def assert_same_h5(a: Path, b: Path, name: str) -> None:
    """Same dataset paths and values (NaN equal to NaN), and the same attributes."""
    data_a, data_b = h5_datasets(a), h5_datasets(b)
    assert data_a.keys() == data_b.keys(), name
    for key in data_a:
        assert data_a[key].dtype == data_b[key].dtype, f"{name}:{key}"
        assert np.array_equal(data_a[key], data_b[key],
                              equal_nan=data_a[key].dtype.kind in "fc"), f"{name}:{key}"
    attrs_a, attrs_b = h5_attributes(a), h5_attributes(b)
    assert attrs_a.keys() == attrs_b.keys(), name
    for key in attrs_a:
        assert attrs_a[key].keys() == attrs_b[key].keys(), f"{name}:{key}"
        for attr in attrs_a[key]:
            assert np.array_equal(np.asarray(attrs_a[key][attr]), np.asarray(attrs_b[key][attr])), \
                f"{name}:{key} attribute {attr}"


@pytest.mark.workflow
def test_two_folders_give_the_same_result_files(tiny_run, tmp_path_factory):
    """Every result file of a second run elsewhere equals the session run's: byte for byte,
    HDF5 files by datasets and attributes (their bytes hold creation details). No absolute
    path of the run folder and no wall-clock time is in the results."""
    other = tmp_path_factory.mktemp("tiny_run_elsewhere")
    run_snakemake(other, "--configfile", TINY_CONFIG, "--cores", "2")
    files = result_files(tiny_run)
    assert files == result_files(other)
    assert "manifest.csv" in files and "features/shard-00000.h5" in files
    differ = []
    for name in files:
        a, b = tiny_run / "results" / name, other / "results" / name
        if a.suffix == ".h5":
            assert_same_h5(a, b, name)
        elif a.read_bytes() != b.read_bytes():
            differ.append(name)
    assert not differ, f"differ between the two runs: {differ}"
    for name in files:
        if Path(name).suffix in (".csv", ".json", ".md", ".txt"):
            text = (other / "results" / name).read_text(errors="replace")
            assert str(other) not in text, f"{name} names the run folder {other}"
