"""One workflow run on the nastiest model shape a user brings (issue 23 item 0).

A LeNet-style ``nn.Sequential`` for 28x28 grayscale images (tests/anymodel_models.py):
numeric layer names ("2", "6"), in-place ReLUs, BatchNorm, and a Flatten + Linear head
that accepts 28x28 inputs only, loaded through ``model.kind: custom``. The run chooses
its stages (the cheap explanations, a user model's default, plus deep dream, whose
octaves feed smaller images) and must finish; the stages that are off are neither run nor shown.
"""

import json
import os

import h5py
import pytest
import torch
import yaml

from conftest import REPO, run_snakemake
from convscope.store.tables import read_table

pytestmark = pytest.mark.workflow

#: the default for a user's model (the cheap explanations) and deep dream, whose octaves
#: feed smaller images (the other synthesis stages: tests/test_anymodel.py)
CHOSEN = ["explain_attribution", "explain_units", "explain_invariance", "synthesis_dream"]


def _config(weights) -> dict:
    return {
        "dataset": {"kind": "demo",
                    "demo": {"n_images": 40, "image_size": 32, "seed": 1, "test_fraction": 0.25}},
        "model": {"kind": "custom", "factory": "anymodel_models:lenet",
                  "factory_kwargs": {"num_classes": 10}, "weights": str(weights)},
        "preprocess": {"input_size": 28, "channels": 1, "resize": 28, "crop": "center",
                       "mean": [0.5], "std": [0.25]},
        "layers": ["2", "6"],
        "stages": CHOSEN,
        "extract": {"shard_size": 50, "batch_size": 32, "num_workers": 0, "thumb_px": 16},
        "units": {"top_k": 2, "patch_px": 16, "max_channels": 4},
        "explain": {"device": "cpu", "batch_size": 8,
                    "images": {"kind": "per_class", "per_class": 1, "max_images": 3},
                    "reconstructions": {"units_per_layer": 1, "top_k": 1, "cell_px": 16},
                    "invariance": {"n_images": 1, "amounts_per_transform": 2}},
        "synthesis": {"device": "cpu", "dream": {"n_images": 1, "octaves": 2, "steps": 2}},
        "report": {"patch_px": 16},
    }


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    import anymodel_models

    workdir = tmp_path_factory.mktemp("lenet_run")
    torch.manual_seed(0)
    net = anymodel_models.lenet(10)
    torch.save(net.state_dict(), workdir / "lenet.pt")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(_config(workdir / "lenet.pt")))
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), old]))
    try:
        run_snakemake(workdir, "--configfile", config, "--cores", "2")
    finally:
        os.environ["PYTHONPATH"] = old
    return workdir, net.eval()


def test_numeric_layer_names_reach_every_table(lenet_run):
    results = lenet_run[0] / "results"
    assert set(read_table(results / "units" / "topk.csv")["layer"]) == {"2", "6"}
    summary = json.loads((results / "explain" / "units" / "summary.json").read_text())
    assert sorted(summary["units"]) == ["2", "6"]
    figures = results / "explain" / "units" / "figures"
    assert sorted(p.name for p in figures.iterdir() if not p.name.startswith(".")) == ["2", "6"]
    pages = results / "report" / "pages"
    assert (pages / "layer-2.html").is_file() and (pages / "layer-6.html").is_file()


def test_dream_ran_on_a_fixed_size_head(lenet_run):
    """Octave 1 is 20x20 (28 / 1.4): the Flatten + Linear head would refuse it; the layer's
    norm written by the stage equals a plain-torch forward of the first layers."""
    workdir, net = lenet_run
    with h5py.File(workdir / "results" / "synthesis" / "dream" / "dream.h5") as f:
        layer = f.attrs["layer"]
        original = torch.from_numpy(f["original"][()][..., :1]).permute(0, 3, 1, 2)
        before = f["layer_l2_before"][()]
    assert layer == "6"
    x = (original.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = net[:7](x).flatten(1).norm(dim=1).numpy()
    assert before == pytest.approx(expected, rel=0.03)


def test_only_the_chosen_stages_run_and_show(lenet_run):
    results = lenet_run[0] / "results"
    shown = sorted(p.name for p in (results / "report" / "pages").glob("stage-*.html"))
    assert shown == sorted(f"stage-{name}.html" for name in CHOSEN)
    for off in ("classes", "units", "inversion", "evolution", "style", "adversarial", "fooling"):
        assert not (results / "synthesis" / off).exists()
        assert not (results / "benchmarks" / f"synthesis_{off}.tsv").exists()
    assert not (results / "explain" / "keypoints").exists()


def test_a_stage_that_cannot_run_stops_before_any_job(tmp_path):
    """``stages`` naming explain_keypoints without the manifest columns that locate the
    keypoint, or a text other than auto / all: one message, before the first job."""
    import numpy as np
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / name / "a.png")
    torch.save({"w": torch.zeros(1)}, tmp_path / "net.pt")
    base = {"dataset": {"kind": "folder", "path": str(tmp_path / "images")},
            "model": {"kind": "custom", "factory": "convscope.nn.models:DemoCNN",
                      "weights": str(tmp_path / "net.pt")},
            "layers": ["relu1"]}
    for stages, expected in ((["explain_keypoints"], "explain.keypoints.point_columns"),
                             ("some", "'auto', 'all'")):
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({**base, "stages": stages}))
        proc = run_snakemake(tmp_path, "--configfile", "config.yaml", "-n", check=False,
                             timeout=120)
        assert proc.returncode != 0 and expected in proc.stdout + proc.stderr, proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
