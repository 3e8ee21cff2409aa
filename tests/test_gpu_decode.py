"""Device-side decode/prepare (convscope.data.gpu_decode) against the Pillow/numpy path, and
chunked extraction (small loader tasks merged into model batches)."""

import io

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from convscope.config.validate import validate_config
from convscope.data import gpu_decode
from convscope.extract import loader
from convscope.extract import pipeline
from convscope.data.images import PIXEL_ATTRIBUTE_NAMES, make_thumbnail, pixel_attributes
from convscope.data.manifest import build_manifest, write_manifest
from convscope.data.preprocess import prepare_uint8
from convscope.nn.models import DemoCNN
from conftest import describe_from_config
from test_extract import extract_with


def _smooth_image(rng, height, width):
    """Photo-like (H, W, 3) uint8: a bicubic-upsampled colour field plus some grain."""
    coarse = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    return np.clip(field + rng.integers(-4, 5, size=field.shape), 0, 255).astype(np.uint8)


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    out = [_smooth_image(rng, h, w) for h, w in [(75, 100), (75, 100), (120, 61), (20, 20), (9, 13)]]
    out[1][:10] = 0  # black pixels: saturation 0 there
    out.append(rng.integers(0, 256, size=(33, 47, 3), dtype=np.uint8))  # pure noise
    return out


def test_pixel_attributes_match_numpy(images):
    got = gpu_decode.pixel_attributes([_chw(im) for im in images]).numpy()
    want = np.array([[pixel_attributes(im)[k] for k in PIXEL_ATTRIBUTE_NAMES] for im in images])
    assert got.shape == (len(images), len(PIXEL_ATTRIBUTE_NAMES)) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("cfg", [
    {"input_size": 32, "resize": 36, "crop": "center", "channels": 3},
    {"input_size": [24, 40], "resize": 48, "crop": "center", "channels": 1},
    {"input_size": 28, "crop": "none", "channels": 3},
])
def test_prepare_images_close_to_pillow(images, cfg):
    got = gpu_decode.prepare_images([_chw(im) for im in images], cfg).numpy()
    want = np.stack([prepare_uint8(im, cfg) for im in images])
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    # both are antialiased bilinear; Pillow rounds its fixed-point weights
    smooth = diff[:-1]  # the last image is pure noise, the worst case for any resampler
    assert smooth.mean() < 0.5 and np.percentile(smooth, 99) <= 3, (smooth.mean(), smooth.max())
    assert diff.mean() < 3


def test_crop_and_pad_geometry_is_exact_without_resize(images):
    cfg = {"input_size": [16, 50], "resize": None, "crop": "center", "channels": 3}
    got = gpu_decode.prepare_images([_chw(im) for im in images], cfg).numpy()
    np.testing.assert_array_equal(got, np.stack([prepare_uint8(im, cfg) for im in images]))


def test_thumbnails_close_to_pillow(images):
    got = gpu_decode.make_thumbnails([_chw(im) for im in images], 8).numpy()
    want = np.stack([make_thumbnail(im, 8) for im in images])
    assert got.shape == want.shape == (len(images), 8, 8, 3)
    diff = np.abs(got.astype(int) - want.astype(int))[:-1]  # bicubic vs Lanczos
    assert diff.mean() < 4.0 and diff.max() <= 24, (diff.mean(), diff.max())
    same = gpu_decode.make_thumbnails([_chw(images[3])], 20).numpy()[0]  # side == size: a copy
    np.testing.assert_array_equal(same, make_thumbnail(images[3], 20))


def _jpeg_bytes(image: np.ndarray, **kw) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90, **kw)
    return buffer.getvalue()


def test_decode_jpegs_matches_pillow_and_reports_failures(images):
    data = [_jpeg_bytes(images[0]), b"\xff\xd8\xff\xe0 not a jpeg \xff\xd9", _jpeg_bytes(images[2])]
    decoded = gpu_decode.decode_jpegs([torch.frombuffer(bytearray(d), dtype=torch.uint8)
                                       for d in data], "cpu")
    assert isinstance(decoded[1], str) and "cannot decode" in decoded[1]
    for k in (0, 2):
        pil = np.asarray(Image.open(io.BytesIO(data[k])).convert("RGB"))
        got = decoded[k].permute(1, 2, 0).numpy()
        assert got.shape == pil.shape
        assert np.abs(got.astype(int) - pil.astype(int)).mean() < 1.0


def test_read_jpeg_for_device_takes_only_what_it_can_decode_like_pillow(tmp_path, images):
    good = tmp_path / "good.jpg"
    good.write_bytes(_jpeg_bytes(images[0]))
    grey = tmp_path / "grey.jpg"
    Image.fromarray(images[0][..., 0]).save(grey, quality=90)
    png = tmp_path / "a.jpg"  # a PNG with a .jpg name
    Image.fromarray(images[0]).save(png, format="PNG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:-200])
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(images[0]).convert("CMYK").save(cmyk, format="JPEG")
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(images[0]).save(rotated, format="JPEG", exif=exif)
    assert gpu_decode.read_jpeg_for_device(str(good)) == good.read_bytes()
    assert gpu_decode.read_jpeg_for_device(str(grey)) is not None
    for path in (png, truncated, cmyk, rotated, tmp_path / "missing.jpg"):
        assert gpu_decode.read_jpeg_for_device(str(path)) is None, path.name


def test_chunks_keep_model_batches():
    chunks, per_batch = loader.chunks(10, 4, 3)
    assert chunks == [[0, 1, 2], [3], [4, 5, 6], [7], [8, 9]] and per_batch == [2, 2, 1]
    assert loader.chunk_size(1000, 256, 16) == 16 and loader.chunk_size(10, 4, 0) == 4
    assert loader.chunk_size(100_000, 256, 16) == 32


# --------------------------------------------------------------------------
# extraction


@pytest.fixture
def shard_setup(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            image = _smooth_image(rng, 40 + 6 * (i % 3), 50 + 4 * i)
            if i == 4:
                Image.fromarray(image).save(root / cls / f"{i}.png")
            else:
                (root / cls / f"{i}.jpg").write_bytes(_jpeg_bytes(image))
    Image.fromarray(_smooth_image(rng, 40, 40)).convert("CMYK").save(root / "a" / "cmyk.jpg")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(300) + b"\xff\xd9")
    manifest, classes = build_manifest("folder", str(root))
    write_manifest(manifest, classes, tmp_path / "manifest.csv")
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    torch.save(DemoCNN(num_classes=2).state_dict(), weights)

    def config(**extract_cfg):
        return validate_config({
            "dataset": {"kind": "folder", "path": str(root)},
            "model": {"kind": "demo", "weights": str(weights)},
            "preprocess": {"input_size": 32, "resize": 36},
            "layers": ["relu1", "relu3"],
            "extract": {"shard_size": 100, "batch_size": 4, "num_workers": 0, "thumb_px": 8,
                        **extract_cfg},
        })

    model = DemoCNN(num_classes=2)
    model.load_state_dict(torch.load(weights))
    info = describe_from_config(model.eval(), config())
    return tmp_path, config, info


def _read(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def _counting_model(weights) -> tuple[DemoCNN, list[int]]:
    """The checkpoint's model, and the list of batch sizes its forward passes see."""
    model = DemoCNN(num_classes=2)
    model.load_state_dict(torch.load(weights))
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda m, inputs: sizes.append(len(inputs[0])))
    return model.eval(), sizes


def test_chunked_loader_gives_the_same_shard(shard_setup):
    tmp_path, config, info = shard_setup
    shards, sizes = [], []
    for workers in (0, 2):
        cfg = config(num_workers=workers, decode="cpu")
        model, seen = _counting_model(cfg["model"]["weights"])
        out = tmp_path / f"w{workers}.h5"
        summary = extract_with(cfg, tmp_path / "manifest.csv", info, 0, out, network=model)
        assert summary["decode"] == "cpu" and summary["failed"] == 1
        shards.append(_read(out))
        sizes.append(seen)
    assert sizes[0] == sizes[1]  # the model saw the same batches
    assert shards[0].keys() == shards[1].keys()
    for name in shards[0]:
        np.testing.assert_array_equal(shards[0][name], shards[1][name], err_msg=name)


def _compare_decode_paths(tmp_path, config, info, device, monkeypatch):
    if device == "cpu":  # run the GPU path's code with CPU tensors
        monkeypatch.setattr(pipeline, "resolve_decode", lambda name, dev: name)
    paths = {}
    for n, decode in enumerate(("cpu", "gpu", "gpu")):
        out = tmp_path / f"{decode}-{n}.h5"
        summary = extract_with(config(num_workers=2, decode=decode, device=device),
                               tmp_path / "manifest.csv", info, 0, out)
        assert summary["decode"] == decode
        paths[decode] = paths.get(decode, []) + [out]
    cpu, gpu, gpu_again = _read(paths["cpu"][0]), _read(paths["gpu"][0]), _read(paths["gpu"][1])
    for name in gpu:  # deterministic within a path
        np.testing.assert_array_equal(gpu[name], gpu_again[name], err_msg=name)
    for name in ("index", "label", "failed/index", "failed/reason", "image_attrs/width",
                 "image_attrs/height", "image_attrs/aspect"):
        np.testing.assert_array_equal(gpu[name], cpu[name], err_msg=name)
    assert len(cpu["failed/index"]) == 1
    # nvJPEG upsamples chroma differently from libjpeg: colour statistics of these small,
    # colour-noisy images move by up to ~2.5 % on an H100 (brightness/contrast by < 1e-3)
    for name in ("brightness", "contrast", "colourfulness", "saturation"):
        np.testing.assert_allclose(gpu[f"image_attrs/{name}"], cpu[f"image_attrs/{name}"],
                                   rtol=0.05, atol=0.01, err_msg=name)
    assert np.abs(gpu["thumbs"].astype(int) - cpu["thumbs"].astype(int)).mean() < 3
    np.testing.assert_allclose(gpu["codes"], cpu["codes"], rtol=0.1, atol=0.05 * np.abs(cpu["codes"]).max())


def test_gpu_path_code_on_cpu_tensors_matches_cpu_path(shard_setup, monkeypatch):
    tmp_path, config, info = shard_setup
    _compare_decode_paths(tmp_path, config, info, "cpu", monkeypatch)


@pytest.mark.gpu
def test_gpu_path_on_cuda_matches_cpu_path(shard_setup, monkeypatch):
    tmp_path, config, info = shard_setup
    _compare_decode_paths(tmp_path, config, info, "cuda", monkeypatch)


def test_decode_choice():
    assert loader.resolve_decode("auto", torch.device("cpu")) == "cpu"
    assert loader.resolve_decode("cpu", torch.device("cpu")) == "cpu"
    with pytest.raises(RuntimeError, match="extract.decode is 'gpu'"):
        loader.resolve_decode("gpu", torch.device("cpu"))
    with pytest.raises(ValueError, match="auto, cpu, gpu"):
        loader.resolve_decode("nvjpeg", torch.device("cpu"))
