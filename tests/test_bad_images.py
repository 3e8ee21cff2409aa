"""Bad and unusual image files, through extraction and through the whole workflow.

Every file is made here. Readable ones (grey, 16-bit, CMYK, palette with
transparency, EXIF-rotated) must be converted correctly: their pixel
attributes in the shard are compared with values computed by hand. Unreadable
ones (zero-byte, truncated, corrupt, text with an image suffix, missing,
decompression bomb) must land in the shard's ``failed`` table with their
reason while the shard completes; ``extract.on_error: fail`` stops instead.
"""

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from convscope.config.validate import validate_config
from convscope.extract.loader import ShardImages
from convscope.extract.pipeline import ImageFailure
from convscope.data.images import ImageReadError, load_image
from convscope.data.manifest import build_manifest, write_manifest
from convscope.config import ModelConfig, PreprocessConfig
from convscope.nn.models import DemoCNN, load_model
from convscope.store.shards import iter_shards
from conftest import describe_from_config
from test_extract import extract_with

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
REC601 = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------
# the files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _bomb_png(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims ``width x height`` 8-bit grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _noise_rgb(size=(32, 32), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def make_image_files(folder: Path) -> tuple[list[tuple[str, dict | None]], dict[str, str]]:
    """Write the test images; return ``[(file name, expected attrs or None)]`` and bad reasons.

    Expected attrs of readable images are computed from the colours put in, by hand.
    """
    folder.mkdir(parents=True, exist_ok=True)
    good: list[tuple[str, dict]] = []

    Image.new("RGB", (24, 20), (200, 50, 50)).save(folder / "rgb.png")
    good.append(("rgb.png", {"brightness": REC601 @ [200, 50, 50] / 255,
                             "width": 24, "height": 20}))

    Image.new("L", (20, 20), 100).save(folder / "grey.png")
    good.append(("grey.png", {"brightness": 100 / 255, "saturation": 0.0}))

    Image.fromarray(np.full((20, 20), 51400, np.uint16)).save(folder / "grey16.png")
    # 16-bit values are scaled: round(51400 / 257) = 200
    good.append(("grey16.png", {"brightness": 200 / 255, "saturation": 0.0}))

    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(folder / "cmyk.tif")
    good.append(("cmyk.tif", {"brightness": REC601 @ [255, 0, 0] / 255, "saturation": 1.0}))

    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 255, 255, 0, 0] + [0] * (254 * 3))
    palette.paste(1, (0, 10, 20, 20))  # bottom half red, top half index 0 (transparent blue)
    palette.save(folder / "palette_alpha.png", transparency=0)
    # transparent pixels are composited over white
    good.append(("palette_alpha.png", {"brightness": (1.0 + REC601 @ [255, 0, 0] / 255) / 2}))

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, 20:] = 255  # stored: left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    good.append(("exif_rotated.jpg", {"width": 20, "height": 40}))

    png = _encoded(_noise_rgb(), "PNG")
    jpeg = _encoded(_noise_rgb(seed=1), "JPEG")
    bad = {
        "empty.png": "zero-byte file",
        "truncated.jpg": "truncated image",
        "truncated.png": "truncated image",
        "corrupt.png": "",  # any reason will do
        "text.jpg": "cannot identify image file",
        "missing.png": "file not found",
        "bomb.png": "image too large",
    }
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "corrupt.png").write_bytes(png[:33] + _png_chunk(b"IDAT", os.urandom(300))
                                         + _png_chunk(b"IEND", b""))
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    (folder / "bomb.png").write_bytes(_bomb_png(30_000, 30_000))
    return good, bad


def _save_checkpoint(path: Path, num_classes: int = 3) -> None:
    torch.manual_seed(0)
    torch.save(DemoCNN(num_classes=num_classes).state_dict(), path)


def _setup(tmp_path: Path, on_error: str = "skip"):
    """Images, a user manifest, the workflow manifest, a checkpoint and a config."""
    good, bad = make_image_files(tmp_path / "images")
    names = [name for name, _ in good] + list(bad)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(names))  # bad files between good ones
    names = [names[i] for i in order]
    table = pd.DataFrame({"path": [f"images/{n}" for n in names],
                          "label": [["a", "b", "c"][i % 3] for i in range(len(names))]})
    table.to_csv(tmp_path / "data.csv", index=False)
    _save_checkpoint(tmp_path / "net.pt")
    config = validate_config({
        "dataset": {"kind": "manifest", "path": str(tmp_path / "data.csv"),
                    "class_names": ["a", "b", "c"]},
        "model": {"kind": "custom", "factory": "convscope.nn.models:DemoCNN",
                  "factory_kwargs": {"num_classes": 3}, "weights": str(tmp_path / "net.pt")},
        "preprocess": {"input_size": 32, "resize": 32, "mean": [0.5, 0.5, 0.5],
                       "std": [0.25, 0.25, 0.25]},
        "layers": ["relu1", "relu2", "relu3", "relu4"],
        "extract": {"shard_size": 100, "batch_size": 4, "num_workers": 0, "thumb_px": 8,
                    "device": "cpu", "on_error": on_error},
    })
    manifest, class_names = build_manifest("manifest", tmp_path / "data.csv")
    write_manifest(manifest, class_names, tmp_path / "results" / "manifest.csv")
    model_info = describe_from_config(load_model(ModelConfig.from_dict(config["model"]),
                                             config["model"]["weights"]), config)
    return config, names, dict(good), bad, model_info


# --------------------------------------------------------------------------
# through extraction


def test_bad_images_are_recorded_and_good_ones_converted(tmp_path):
    config, names, good, bad, model_info = _setup(tmp_path)
    out = tmp_path / "results" / "features" / "shard-00000.h5"
    summary = extract_with(config, tmp_path / "results" / "manifest.csv", model_info, 0, out)

    wanted = ["index", "failed/index", "failed/reason", "thumbs", "codes", "layers/relu4/max"]
    wanted += [f"image_attrs/{a}" for a in ("brightness", "saturation", "width", "height")]
    shard = next(iter_shards([out], wanted))
    failed = dict(zip(shard["failed/index"].tolist(), shard["failed/reason"].tolist()))
    expected_failed = {i: bad[n] for i, n in enumerate(names) if n in bad}
    assert sorted(failed) == sorted(expected_failed)
    for index, reason in failed.items():
        assert reason and reason.startswith(expected_failed[index]), (names[index], reason)
    assert summary["failed"] == len(bad) and summary["images"] == len(good)

    expected_ok = [i for i, n in enumerate(names) if n in good]
    assert shard["index"].tolist() == expected_ok
    assert np.isfinite(shard["codes"]).all() and np.isfinite(shard["layers/relu4/max"]).all()
    rows = {int(index): row for row, index in enumerate(shard["index"])}
    for index in expected_ok:
        for attr, value in good[names[index]].items():
            got = shard[f"image_attrs/{attr}"][rows[index]]
            assert got == pytest.approx(value, abs=0.01), (names[index], attr)

    # EXIF orientation applied: the stored left (black) half is the displayed top half
    thumb = shard["thumbs"][rows[names.index("exif_rotated.jpg")]].astype(float)
    assert thumb[:3].mean() < 40 and thumb[-3:].mean() > 215


def test_on_error_fail_stops_without_a_shard(tmp_path):
    config, names, _good, bad, model_info = _setup(tmp_path, on_error="fail")
    out = tmp_path / "results" / "features" / "shard-00000.h5"
    with pytest.raises(ImageFailure) as err:
        extract_with(config, tmp_path / "results" / "manifest.csv", model_info, 0, out)
    first_bad = next(n for n in names if n in bad)
    assert first_bad in str(err.value) and "on_error" in str(err.value)
    assert not out.parent.exists() or not any(out.parent.iterdir())


# --------------------------------------------------------------------------
# random bytes never crash the loader

_SEEDS = {
    ".png": _encoded(_noise_rgb((12, 10)), "PNG"),
    ".jpg": _encoded(_noise_rgb((12, 10)), "JPEG"),
    ".gif": _encoded(_noise_rgb((12, 10)).convert("P"), "GIF"),
    ".bmp": _encoded(_noise_rgb((12, 10)), "BMP"),
    ".tif": _encoded(_noise_rgb((12, 10)), "TIFF"),
    ".webp": _encoded(_noise_rgb((12, 10)), "WEBP"),
}


@st.composite
def _image_like_bytes(draw):
    """(suffix, bytes): random bytes, or a valid small image truncated or with bytes changed.

    Changes are kept out of the first 40 % of the file so that headers rarely
    claim huge sizes (the bomb limit is tested above; decoding 10^8 pixels is slow).
    """
    suffix = draw(st.sampled_from(sorted(_SEEDS)))
    kind = draw(st.sampled_from(["random", "truncated", "mutated"]))
    if kind == "random":
        return suffix, draw(st.binary(max_size=400))
    data = bytearray(_SEEDS[suffix])
    if kind == "truncated":
        return suffix, bytes(data[: draw(st.integers(0, len(data)))])
    start = int(len(data) * 0.4)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(start, len(data) - 1))] = draw(st.integers(0, 255))
    return suffix, bytes(data)


_PREPROCESS_16 = PreprocessConfig.from_dict(
    validate_config({"preprocess": {"input_size": 16, "resize": 16}})["preprocess"])


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about what it salvages
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_image_like_bytes())
def test_random_bytes_decode_or_fail_cleanly(tmp_path, case):
    suffix, data = case
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageReadError as error:
        assert str(error)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    rows = pd.DataFrame({"index": [0], "path": [str(path)], "slot": [-1], "label": [0]})
    item = ShardImages(rows, _PREPROCESS_16, 8)[0]
    assert ("failed" in item) != ("image" in item)
    if "image" in item:
        assert item["image"].shape == (16, 16, 3) and item["thumb"].shape == (8, 8, 3)


# --------------------------------------------------------------------------
# the whole workflow


@pytest.mark.workflow
def test_workflow_report_lists_failed_images(tmp_path):
    _config, names, _good, bad, _info = _setup(tmp_path)
    overlay = {
        "dataset": {"kind": "manifest", "path": str(tmp_path / "data.csv"),
                    "class_names": ["a", "b", "c"]},
        "model": {"kind": "custom", "factory": "convscope.nn.models:DemoCNN",
                  "factory_kwargs": {"num_classes": 3}, "weights": str(tmp_path / "net.pt")},
        "preprocess": {"input_size": 32, "resize": 32, "mean": [0.5, 0.5, 0.5],
                       "std": [0.25, 0.25, 0.25]},
        "layers": ["relu1", "relu2", "relu3", "relu4"],
        "extract": {"shard_size": 100, "batch_size": 4, "num_workers": 0, "thumb_px": 8,
                    "device": "cpu"},
        "units": {"top_k": 2, "patch_px": 16, "max_channels": 4},
        "filters": {"max_filters": 8, "panel_images": 1},
        "performance": {"split": "all"},
        "stages": [],  # the failures are listed by extraction, performance and the report
    }
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile",
         "config.yaml", "--cores", "2"],
        cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    html = (workdir / "results" / "report" / "index.html").read_text()
    for name in bad:
        assert name in html, name
    for reason in ("zero-byte file", "file not found", "image too large", "truncated image"):
        assert reason in html
