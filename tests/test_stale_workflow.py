"""Through snakemake: a changed weights file, deleted intermediates and a damaged shard
never leave "Nothing to be done" behind; a failing job's log ends with its error.

Each test works on a copy of the session's complete tiny run (`tiny_run`, which
other tests only dry-run), so the cases can change files freely.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from conftest import TINY_CONFIG, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow

SHARDS = [f"results/features/shard-{i:05d}.h5" for i in range(3)]  # 120 images, shards of 50
ANALYSES = {"topk_units": 1, "unit_stats": 1, "filters": 1, "performance": 1, "embedding": 1,
            "neighbours": 1, "cka": 1, "probes": 1, "export": 1, "report": 1}
# stages that read the model and the manifest but not the shards
MODEL_READERS = {"explain_invariance": 1, "explain_correspondence": 1, "explain_keypoints": 1,
                 "dissect": 1}
# the ablation stage reads the model and units/topk.csv (its units' top images)
TOPK_READERS = {"ablation": 1}
# stages that read the shards (the image set) and the weights
# (tiny_config: attribution in two chunks)
EXPLAIN = {"explain_images": 1, "explain_attribution_chunk": 2, "explain_attribution": 1,
           "explain_units": 1, "explain_faithfulness": 1}
# the unit images' chunks skip the units that are dead on the dataset (units/stats.csv); their
# merge judges each image against the dataset best, read from the shards
SHARD_SYNTHESIS = {"synthesis_units_chunk": 2, "synthesis_units": 1}
# stages that read the weights but not the shards (the unit images' chunks wait for the
# model_info checkpoint, which reruns, so a dry run lists only their merge)
SYNTHESIS = {"synthesis_classes": 1, "synthesis_units": 1, "synthesis_inversion": 1,
             "synthesis_evolution": 1, "synthesis_dream": 1, "synthesis_style": 1,
             "synthesis_adversarial": 1, "synthesis_fooling": 1}


def _snakemake(workdir: Path, *args: str, check: bool = True):
    return run_snakemake(workdir, "--configfile", TINY_CONFIG, *args, check=check, timeout=600)


def _planned(workdir: Path) -> dict[str, int]:
    """The jobs of ``snakemake -n``: rule -> count (`all` left out; {} for nothing to do)."""
    result = _snakemake(workdir, "-n")
    return planned_jobs(result.stdout + result.stderr)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)  # keeps modification times
    return workdir


def test_weights_with_older_mtime_but_new_content_rerun_everything_after_them(run_copy):
    # a finished run, run again: nothing to do (the weights hash recorded is the real one,
    # although the demo weights did not exist when the first run planned its jobs)
    assert _planned(run_copy) == {}
    weights = run_copy / "results/model/demo_model.pt"
    state = torch.load(weights, map_location="cpu")
    other = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    replacement = run_copy / "other.pt"
    torch.save(other, replacement)
    # `cp -p` of an older file: newer than the manifest it was trained on (so training
    # does not rerun), older than everything made from it
    older = (run_copy / "results/model/model_info.json").stat().st_mtime_ns - 10**9
    assert older > (run_copy / "results/manifest.csv").stat().st_mtime_ns
    os.utime(replacement, ns=(older, older))
    shutil.copy2(replacement, weights)
    assert weights.stat().st_mtime_ns == older
    assert _planned(run_copy) == {"model_info": 1, "extract": 3, "shard_index": 1, **ANALYSES,
                                  **MODEL_READERS, **EXPLAIN, **SYNTHESIS, **TOPK_READERS}


def test_deleted_intermediates_are_rebuilt_and_a_damaged_shard_stops_with_its_log(run_copy):
    features = run_copy / "results/features"
    saved = run_copy / "saved"
    saved.mkdir()

    def delete(rel: str) -> None:
        shutil.move(run_copy / rel, saved / Path(rel).name)

    def restore(rel: str) -> None:
        shutil.move(saved / Path(rel).name, run_copy / rel)

    delete(SHARDS[1])
    assert _planned(run_copy) == {"extract": 1, "shard_index": 1, **ANALYSES, **EXPLAIN,
                                  **TOPK_READERS, **SHARD_SYNTHESIS}
    restore(SHARDS[1])
    delete("results/features/index.json")
    assert _planned(run_copy) == {"shard_index": 1, **ANALYSES, **EXPLAIN, **TOPK_READERS,
                                  **SHARD_SYNTHESIS}
    restore("results/features/index.json")
    # the manifest is a checkpoint: what follows it is planned once it is rebuilt, but for
    # the model trained on it and the model_info checkpoint, which the target waits for
    delete("results/manifest.csv")
    assert _planned(run_copy) == {"manifest": 1, "train_demo_model": 1, "model_info": 1}
    restore("results/manifest.csv")
    assert _planned(run_copy) == {}

    # A shard changed in place, same size: the shard index job reads every checksum,
    # fails, and its log ends with the one message naming the file and what to do.
    shard = run_copy / SHARDS[2]
    with h5py.File(shard) as f:
        chunk = f["codes"].id.get_chunk_info(0)
    size = shard.stat().st_size
    with open(shard, "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 2)
        fh.write(b"\xde\xad\xbe\xef")
    assert shard.stat().st_size == size
    failed = _snakemake(run_copy, "--cores", "2", check=False)
    assert failed.returncode != 0
    assert "logs/shard_index.log" in failed.stdout + failed.stderr
    last_line = (run_copy / "logs/shard_index.log").read_text().rstrip("\n").splitlines()[-1]
    assert last_line.startswith("convscope: ShardCorruptError: 1 shard file(s) are damaged")
    assert f"{SHARDS[2]} (" in last_line and "Delete them and rerun" in last_line

    # Doing what it says rebuilds that shard, and a second run has nothing left to do.
    shard.unlink()
    _snakemake(run_copy, "--cores", "2")
    assert shard.exists() and (features / "index.json").exists()
    assert _planned(run_copy) == {}
