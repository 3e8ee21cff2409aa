"""The embedded demo dataset: coloured shapes on textured backgrounds.

Each image shows one shape of its class with random nuisance factors, all
recorded as attribute columns so that accuracy can be broken down by them:

==============  ===========  ==================================================
column          type         meaning
==============  ===========  ==================================================
``colour``      categorical  hue bin of the shape (red, orange, ... pink)
``hue``         float        shape hue in degrees, 0..360
``shape_size``  float        diameter of the shape's circumscribed circle / image side
``rotation``    float        rotation of the shape in degrees, 0..360
``pos_x``       float        shape centre, fraction of the image width (0 left)
``pos_y``       float        shape centre, fraction of the image height (0 top)
``background``  categorical  plain, stripes, checker, noise or gradient
``clutter``     int          number of distractors (0..3): small blobs or lines
==============  ===========  ==================================================

Shapes keep recognisable: ``shape_size`` is at least 0.32, distractors are
drawn behind the shape and are smaller than any shape (at most 0.28 of the
image side), shapes are saturated colours while backgrounds are muted.
Drawing is anti-aliased: masks are drawn at 4x resolution and box-averaged.

`generate_demo_dataset` takes the `DemoDatasetConfig` (``dataset.demo``) and
the two paths the workflow's ``demo_dataset`` rule declares.

Everything is deterministic from ``seed``: image ``i`` uses its own child
seed ``SeedSequence(seed, spawn_key=(1, i))``, so images can be rendered in
any order or in parallel and still be byte-identical.
"""

from __future__ import annotations

import colorsys
import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from convscope.config.sections import DemoDatasetConfig
from convscope.store.atomic import atomic_path

__all__ = [
    "DEMO_CLASSES",
    "DEMO_ATTRIBUTES",
    "COLOUR_NAMES",
    "BACKGROUNDS",
    "hue_to_colour",
    "render_demo_image",
    "generate_demo_dataset",
    "write_demo_concepts",
]

DEMO_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "hexagon",
    "ring",
    "diamond",
    "heart",
    "arrow",
)

#: Attribute columns written to the demo manifest, in order.
DEMO_ATTRIBUTES: tuple[str, ...] = (
    "colour",
    "hue",
    "shape_size",
    "rotation",
    "pos_x",
    "pos_y",
    "background",
    "clutter",
)

BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "checker", "noise", "gradient")

# Upper hue bound (degrees, exclusive) of each colour bin; red wraps around 0.
_HUE_BINS: tuple[tuple[float, str], ...] = (
    (15.0, "red"),
    (45.0, "orange"),
    (70.0, "yellow"),
    (160.0, "green"),
    (200.0, "cyan"),
    (260.0, "blue"),
    (290.0, "purple"),
    (340.0, "pink"),
    (360.0, "red"),
)
COLOUR_NAMES: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")

_SUPERSAMPLE = 4
_MIN_SHAPE_SIZE, _MAX_SHAPE_SIZE = 0.32, 0.72
_MAX_CLUTTER = 3


def hue_to_colour(hue: float) -> str:
    """Name of the colour bin of ``hue`` (degrees)."""
    hue = float(hue) % 360.0
    for upper, name in _HUE_BINS:
        if hue < upper:
            return name
    return "red"


# --------------------------------------------------------------------------
# shape outlines: polygons in unit coordinates (max radius 1, centred on 0)


def _regular(n: int, radius: float = 1.0, phase_deg: float = 90.0) -> np.ndarray:
    """Regular ``n``-gon, (n, 2) vertices at ``radius``, first vertex at ``phase_deg`` (y down)."""
    angles = np.deg2rad(phase_deg + np.arange(n) * 360.0 / n)
    return radius * np.stack([np.cos(angles), -np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    """Star with ``points`` tips: (2 * points, 2) vertices alternating outer radius 1 and ``inner``."""
    outer = _regular(points)
    inner_pts = _regular(points, inner, 90.0 + 180.0 / points)
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


def _heart() -> np.ndarray:
    """Heart curve, (72, 2) points in arbitrary units (normalise before use)."""
    t = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1)


def _normalise(polygon: np.ndarray) -> np.ndarray:
    """Centre on the bounding-box centre and scale to max radius 1."""
    polygon = np.asarray(polygon, dtype=np.float64)
    polygon = polygon - (polygon.min(axis=0) + polygon.max(axis=0)) / 2.0
    return polygon / np.linalg.norm(polygon, axis=1).max()


# Each shape: list of (polygon, fill) drawn in order; fill 0 cuts a hole.
_SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_regular(64), 255)],
    "square": [(_regular(4, phase_deg=45.0), 255)],
    "triangle": [(_regular(3), 255)],
    "star": [(_star(), 255)],
    "cross": [
        (
            _normalise(
                [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3),
                 (0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)]
            ),
            255,
        )
    ],
    "hexagon": [(_regular(6, phase_deg=0.0), 255)],
    "ring": [(_regular(64), 255), (_regular(64, 0.55), 0)],
    "diamond": [(np.array([(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)]), 255)],
    "heart": [(_normalise(_heart()), 255)],
    "arrow": [
        (
            _normalise(
                [(-1, -0.18), (0.2, -0.18), (0.2, -0.5), (1, 0), (0.2, 0.5), (0.2, 0.18), (-1, 0.18)]
            ),
            255,
        )
    ],
}
assert set(_SHAPES) == set(DEMO_CLASSES)


def _rotate(polygon: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise as seen on screen (y axis points down)."""
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    x, y = polygon[:, 0], polygon[:, 1]
    return np.stack([x * cos + y * sin, -x * sin + y * cos], axis=1)


# --------------------------------------------------------------------------
# drawing helpers (coverage masks at supersampled resolution)


def _coverage(layers: list[tuple[np.ndarray, int]], image_size: int) -> np.ndarray:
    """(S, S) float32 coverage in 0..1 of polygons given in *final* pixel coordinates."""
    big = image_size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, fill in layers:
        # pixel (i, j) covers [j, j+1) x [i, i+1); Pillow fills pixel centres.
        points = polygon * _SUPERSAMPLE - 0.5
        draw.polygon([tuple(p) for p in points.tolist()], fill=fill)
    return np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float32) / 255.0


def _downsample(weight: np.ndarray) -> np.ndarray:
    """Box-average a (kS, kS) float array to (S, S) (k = supersampling factor)."""
    image = Image.fromarray(np.ascontiguousarray(weight, dtype=np.float32))
    return np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _supersampled_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates of supersampled pixel centres, in final pixel units."""
    coords = (np.arange(image_size * _SUPERSAMPLE, dtype=np.float32) + 0.5) / _SUPERSAMPLE
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _hsv(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    """RGB (3,) float32 in 0..1 of a hue in degrees, saturation and value in 0..1."""
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value), dtype=np.float32)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A random low-saturation background colour, RGB (3,) float32."""
    return _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.15, 0.95))


def _background(rng: np.random.Generator, kind: str, image_size: int) -> np.ndarray:
    """(S, S, 3) float32 background in 0..1."""
    first, second = _muted_colour(rng), _muted_colour(rng)
    if kind == "plain":
        return np.broadcast_to(first, (image_size, image_size, 3)).copy()
    if kind == "noise":
        # Smooth blotches between two colours plus fine grain.
        grid = rng.uniform(0.0, 1.0, size=(6, 6)).astype(np.float32)
        blotches = np.asarray(
            Image.fromarray(grid).resize((image_size, image_size), Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        weight = np.clip(blotches, 0.0, 1.0)[..., None]
        grain = rng.normal(0.0, 0.05, size=(image_size, image_size, 1)).astype(np.float32)
        return np.clip(first * (1 - weight) + second * weight + grain, 0.0, 1.0)
    yy, xx = _supersampled_grid(image_size)
    if kind == "stripes":
        theta = rng.uniform(0.0, np.pi)
        period = rng.uniform(0.08, 0.25) * image_size
        phase = rng.uniform(0.0, 1.0)
        t = (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase
        weight = (np.mod(t, 1.0) < 0.5).astype(np.float32)
    elif kind == "checker":
        period = rng.uniform(0.08, 0.25) * image_size
        ox, oy = rng.uniform(0.0, period, size=2)
        weight = ((np.floor((xx + ox) / period) + np.floor((yy + oy) / period)) % 2).astype(np.float32)
    elif kind == "gradient":
        theta = rng.uniform(0.0, 2.0 * np.pi)
        t = (xx - image_size / 2) * np.cos(theta) + (yy - image_size / 2) * np.sin(theta)
        weight = np.clip(t / image_size + 0.5, 0.0, 1.0).astype(np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}; valid: {', '.join(BACKGROUNDS)}")
    weight = _downsample(weight)[..., None]
    return first * (1 - weight) + second * weight


def _clutter_polygon(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A small elongated blob or a thin line segment, in final pixel coordinates."""
    centre = rng.uniform(0.0, image_size, size=2)
    angle = rng.uniform(0.0, 360.0)
    if rng.random() < 0.5:  # blob: ellipse, aspect 0.3..0.6, long axis <= 0.18 S
        semi_major = rng.uniform(0.04, 0.09) * image_size
        semi_minor = semi_major * rng.uniform(0.3, 0.6)
        t = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
        outline = np.stack([semi_major * np.cos(t), semi_minor * np.sin(t)], axis=1)
    else:  # line: length 0.12..0.28 S, width 0.02..0.04 S (>= 1 px)
        half_length = rng.uniform(0.06, 0.14) * image_size
        half_width = max(0.5, rng.uniform(0.01, 0.02) * image_size)
        outline = np.array(
            [(-half_length, -half_width), (half_length, -half_width),
             (half_length, half_width), (-half_length, half_width)]
        )
    return _rotate(outline, angle) + centre


def _composite(canvas: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``colour`` over ``canvas`` (S, S, 3) with per-pixel opacity ``coverage`` (S, S)."""
    alpha = coverage[..., None]
    return canvas * (1.0 - alpha) + colour * alpha


# --------------------------------------------------------------------------
# public API


def render_demo_image(rng: np.random.Generator, shape: str, image_size: int) -> tuple[np.ndarray, dict]:
    """One demo image of class ``shape``: ``(S, S, 3) uint8`` and its factors.

    The factors dict has the keys of `DEMO_ATTRIBUTES` (see the module
    docstring). All randomness comes from ``rng``.
    """
    image, factors, _ = _render(rng, shape, image_size)
    return image, factors


def _render(rng: np.random.Generator, shape: str, image_size: int) -> tuple[np.ndarray, dict, np.ndarray]:
    """`render_demo_image` and the shape's (S, S) float32 coverage (0..1) in the image."""
    if shape not in _SHAPES:
        raise ValueError(f"unknown demo shape {shape!r}; valid: {', '.join(DEMO_CLASSES)}")
    image_size = int(image_size)
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")

    hue = round(float(rng.uniform(0.0, 360.0)), 2) % 360.0
    shape_size = round(float(rng.uniform(_MIN_SHAPE_SIZE, _MAX_SHAPE_SIZE)), 4)
    rotation = round(float(rng.uniform(0.0, 360.0)), 2) % 360.0
    margin = shape_size / 2.0
    pos_x = round(float(rng.uniform(margin, 1.0 - margin)), 4)
    pos_y = round(float(rng.uniform(margin, 1.0 - margin)), 4)
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    clutter = int(rng.integers(0, _MAX_CLUTTER + 1))
    shape_colour = _hsv(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))

    canvas = _background(rng, background, image_size)
    for _ in range(clutter):
        polygon = _clutter_polygon(rng, image_size)
        colour = _hsv(rng.uniform(0, 360), rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.0))
        canvas = _composite(canvas, _coverage([(polygon, 255)], image_size), colour)

    radius = shape_size * image_size / 2.0
    centre = np.array([pos_x, pos_y]) * image_size
    layers = [(_rotate(polygon, rotation) * radius + centre, fill) for polygon, fill in _SHAPES[shape]]
    shape_coverage = _coverage(layers, image_size)
    canvas = _composite(canvas, shape_coverage, shape_colour)

    image = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
    factors = {
        "colour": hue_to_colour(hue),
        "hue": hue,
        "shape_size": shape_size,
        "rotation": rotation,
        "pos_x": pos_x,
        "pos_y": pos_y,
        "background": background,
        "clutter": clutter,
    }
    return image, factors, shape_coverage


def _stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) ``train``/``test`` with ``round(test_fraction * n)`` test images of each class."""
    split = np.full(len(labels), "train", dtype=object)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = int(round(test_fraction * len(members)))
        split[rng.permutation(members)[:n_test]] = "test"
    return split


def _check_settings(demo: DemoDatasetConfig) -> None:
    """Raise ``ValueError`` naming the ``dataset.demo`` key that is out of range."""
    if int(demo.n_images) < 1:
        raise ValueError(f"dataset.demo.n_images must be >= 1, got {demo.n_images}")
    if int(demo.image_size) < 16:
        raise ValueError(f"dataset.demo.image_size must be >= 16 pixels, got {demo.image_size}")
    if not 0.0 <= float(demo.test_fraction) < 1.0:
        raise ValueError(f"dataset.demo.test_fraction must be in [0, 1), got {demo.test_fraction}")


def _plan(demo: DemoDatasetConfig) -> tuple[np.ndarray, np.ndarray]:
    """(N,) class ids (balanced, shuffled) and (N,) ``train``/``test`` split of the images."""
    n_images, seed = int(demo.n_images), int(demo.seed)
    plan_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    labels = plan_rng.permutation(np.arange(n_images) % len(DEMO_CLASSES))
    return labels, _stratified_split(labels, float(demo.test_fraction), plan_rng)


def generate_demo_dataset(
    demo: DemoDatasetConfig,
    manifest_csv: str | os.PathLike,
    images_dir: str | os.PathLike,
) -> pd.DataFrame:
    """Write the demo dataset: ``images_dir/00000.png, ...`` and the table ``manifest_csv``.

    The images are ``(S, S)`` RGB PNGs, ``S = demo.image_size``. The table has
    the columns ``path`` (relative to the folder of ``manifest_csv``, with
    ``/`` separators), ``label`` (class name), ``split`` (``train``/``test``,
    stratified by class) and the `DEMO_ATTRIBUTES`; it is written atomically
    and returned. Classes are balanced (counts differ by at most one). The
    same settings give byte-identical files.
    """
    _check_settings(demo)
    n_images, image_size, seed = int(demo.n_images), int(demo.image_size), int(demo.seed)
    manifest_csv, images_dir = Path(manifest_csv), Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    prefix = Path(os.path.relpath(images_dir, manifest_csv.parent)).as_posix()
    labels, split = _plan(demo)
    width = max(5, len(str(n_images - 1)))

    rows = []
    for i in tqdm(range(n_images), desc="demo images", unit="img", leave=False):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
        shape = DEMO_CLASSES[labels[i]]
        image, factors = render_demo_image(rng, shape, image_size)
        name = f"{i:0{width}d}.png"
        Image.fromarray(image).save(images_dir / name, format="PNG", compress_level=6)
        relative = name if prefix == "." else f"{prefix}/{name}"
        rows.append({"path": relative, "label": shape, "split": split[i], **factors})

    manifest = pd.DataFrame(rows, columns=["path", "label", "split", *DEMO_ATTRIBUTES])
    with atomic_path(manifest_csv) as tmp:
        manifest.to_csv(tmp, index=False)
    return manifest


def write_demo_concepts(demo: DemoDatasetConfig, index_csv: str | os.PathLike,
                        labels_csv: str | os.PathLike, masks_dir: str | os.PathLike) -> None:
    """Exact concept masks of the demo dataset, Broden-style, for the dissect stage.

    Every image is drawn again from its seed (the same bytes as `generate_demo_dataset`)
    keeping the shape's coverage; a pixel belongs to the shape where the coverage is at
    least 0.5. Writes ``masks_dir/<image>_shape.png`` and ``<image>_colour.png`` (8-bit
    label maps: the concept number of the shape class or of its colour bin there, 0
    elsewhere), ``labels_csv`` (``number, name, category``: shapes 1..10, colours after
    them) and ``index_csv`` (``image`` = the image file name, ``shape``, ``colour`` = its
    mask files relative to the index's folder).
    """
    _check_settings(demo)
    n_images, image_size, seed = int(demo.n_images), int(demo.image_size), int(demo.seed)
    masks_dir = Path(masks_dir)
    masks_dir.mkdir(parents=True, exist_ok=True)
    prefix = Path(os.path.relpath(masks_dir, Path(index_csv).parent)).as_posix()
    numbers = {("shape", name): i + 1 for i, name in enumerate(DEMO_CLASSES)}
    numbers.update({("colour", name): len(DEMO_CLASSES) + i + 1
                    for i, name in enumerate(COLOUR_NAMES)})
    labels, _ = _plan(demo)
    width = max(5, len(str(n_images - 1)))
    rows = []
    for i in range(n_images):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
        shape = DEMO_CLASSES[labels[i]]
        _, factors, coverage = _render(rng, shape, image_size)
        inside = coverage >= 0.5
        row = {"image": f"{i:0{width}d}.png"}
        for category, name in (("shape", shape), ("colour", factors["colour"])):
            mask_name = f"{i:0{width}d}_{category}.png"
            label_map = np.where(inside, numbers[(category, name)], 0).astype(np.uint8)
            Image.fromarray(label_map).save(masks_dir / mask_name, format="PNG")
            row[category] = f"{prefix}/{mask_name}"
        rows.append(row)
    table = pd.DataFrame([{"number": number, "name": name, "category": category}
                          for (category, name), number in numbers.items()])
    with atomic_path(labels_csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(index_csv) as tmp:
        pd.DataFrame(rows, columns=["image", "shape", "colour"]).to_csv(tmp, index=False)
