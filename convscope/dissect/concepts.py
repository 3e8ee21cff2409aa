"""Concept masks for Network Dissection, read from the user's files.

Two forms (config ``dissect.concepts``):

- a Broden-style ``index.csv``: column ``image`` (an image file name; matched to the
  manifest by file stem) and one column per category whose cell names a label PNG (or
  several, separated by ``;``) relative to the index's folder; ``labels.csv`` beside it
  maps ``number`` to ``name`` and ``category``. A label PNG's pixel is a concept number
  (8/16-bit grey, or ``R + 256 G`` for RGB), 0 = none. An empty cell: the image is not
  annotated for that category.
- a folder holding one folder per concept of binary PNG masks (non-zero = inside) named
  after the images (``<concept>/<image stem>.png``); every image counts as annotated
  (category ``mask``).

Masks are given at the image's original size; a mask of another size with the same aspect
is resized (nearest) with a warning, one of another aspect is refused naming the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from convscope.store.tables import read_table

__all__ = ["ConceptError", "Concepts", "read_concepts", "image_stem"]

logger = logging.getLogger(__name__)


class ConceptError(ValueError):
    """The concept masks given in ``dissect.concepts`` cannot be used as they are."""


def image_stem(path: str) -> str:
    """The key an image is matched by: its file name without folder and extension."""
    return Path(str(path)).stem


@dataclass
class Concepts:
    """Concept names and categories (by concept id), and per image stem its mask files.

    ``files[stem]``: ``(category, path, concept id or None)``; None = a label map whose
    pixel values are concept numbers (`numbers` maps them to ids).
    """

    names: list[str]
    categories: list[str]
    files: dict[str, list[tuple[str, Path, int | None]]]
    numbers: dict[int, int] = field(default_factory=dict)
    source: str = ""

    @property
    def category_names(self) -> list[str]:
        return sorted(set(self.categories))

    def masks(self, stem: str, size: tuple[int, int]) -> tuple[dict[int, np.ndarray], set[str]]:
        """Concept id -> (H, W) bool mask at the image ``size`` (H, W), and the categories
        the image is annotated for. Concepts absent from the image are left out."""
        masks: dict[int, np.ndarray] = {}
        annotated = set()
        for category, path, concept in self.files.get(stem, []):
            annotated.add(category)
            values = _read_mask(path, size)
            if concept is not None:
                masks[concept] = masks.get(concept, False) | (values != 0)
                continue
            for number in np.unique(values):
                if number == 0:
                    continue
                if int(number) not in self.numbers:
                    raise ConceptError(f"dissect.concepts: mask {path} holds the value {number}, "
                                       f"which labels.csv does not list")
                cid = self.numbers[int(number)]
                if self.categories[cid] != category:
                    raise ConceptError(f"dissect.concepts: mask {path} (column {category!r}) holds "
                                       f"{self.names[cid]!r}, a concept of category "
                                       f"{self.categories[cid]!r} in labels.csv")
                masks[cid] = masks.get(cid, False) | (values == number)
        if not self.files.get(stem) and self.categories and "mask" in self.categories:
            annotated.add("mask")
        return masks, annotated


def _read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W) int64 mask values at ``size``, resized (nearest) when only the scale differs."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGB", "RGBA"):
                rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
                values = rgb[..., 0] + 256 * rgb[..., 1]
            else:
                values = np.asarray(image, dtype=np.int64)
    except OSError as exc:
        raise ConceptError(f"dissect.concepts: cannot read mask {path}: {exc}") from None
    height, width = size
    if values.shape != (height, width):
        if abs(values.shape[0] * width - values.shape[1] * height) > max(height, width):
            raise ConceptError(
                f"dissect.concepts: mask {path} is {values.shape[1]}x{values.shape[0]} but its "
                f"image is {width}x{height} (another aspect ratio); give masks of the image's size")
        logger.warning("mask %s is %dx%d, its image %dx%d: resized (nearest)", path,
                       values.shape[1], values.shape[0], width, height)
        resized = Image.fromarray(values.astype(np.int32)).resize((width, height),
                                                                  Image.Resampling.NEAREST)
        values = np.asarray(resized, dtype=np.int64)
    return values


def _listing(items, limit: int = 5) -> str:
    items = sorted(str(i) for i in items)
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _read_index(index_csv: Path) -> Concepts:
    labels_csv = index_csv.parent / "labels.csv"
    if not labels_csv.exists():
        raise ConceptError(f"dissect.concepts: {labels_csv} is missing; a Broden-style index "
                           "needs labels.csv (number, name, category) beside index.csv")
    labels = read_table(labels_csv, text=["name", "category"])
    missing = {"number", "name", "category"} - set(labels.columns)
    if missing:
        raise ConceptError(f"dissect.concepts: {labels_csv} lacks the column(s) "
                           f"{_listing(missing)}; expected number, name, category")
    labels = labels[labels["number"] > 0].reset_index(drop=True)
    index = read_table(index_csv, dtype=str, keep_default_na=False)
    if "image" not in index.columns:
        raise ConceptError(f"dissect.concepts: {index_csv} has no column 'image'")
    categories = [c for c in index.columns if c != "image"]
    unknown = sorted(set(categories) - set(labels["category"].astype(str)))
    if unknown:
        raise ConceptError(f"dissect.concepts: column(s) {_listing(unknown)} of {index_csv} are "
                           f"no category of labels.csv; its categories: "
                           f"{_listing(set(labels['category'].astype(str)), 20)}")
    files: dict[str, list] = {}
    absent = []
    for _, row in index.iterrows():
        entries = files.setdefault(image_stem(row["image"]), [])
        for category in categories:
            for name in filter(None, (p.strip() for p in str(row[category]).split(";"))):
                path = index_csv.parent / name
                if not path.exists():
                    absent.append(str(path))
                entries.append((category, path, None))
    if absent:
        raise ConceptError(f"dissect.concepts: {index_csv} names {len(absent)} mask file(s) that "
                           f"do not exist: {_listing(absent)}")
    return Concepts(labels["name"].astype(str).tolist(), labels["category"].astype(str).tolist(),
                    files, {int(n): i for i, n in enumerate(labels["number"])}, str(index_csv))


def _read_folders(root: Path) -> Concepts:
    names, files = [], {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        masks = sorted(folder.glob("*.png"))
        if not masks:
            logger.warning("dissect.concepts: concept folder %s holds no PNG mask: skipped", folder)
            continue
        for path in masks:
            files.setdefault(path.stem, []).append(("mask", path, len(names)))
        names.append(folder.name)
    if not names:
        raise ConceptError(f"dissect.concepts: {root} holds no concept folder with PNG masks "
                           "(expected <folder>/<concept>/<image stem>.png)")
    return Concepts(names, ["mask"] * len(names), files, {}, str(root))


def read_concepts(source: str | os.PathLike, stems: list[str]) -> Concepts:
    """The concepts of ``source`` (an index.csv or a folder), keeping the images of ``stems``
    (the dataset's); masks of other images are listed in a warning and ignored."""
    source = Path(source)
    if not source.exists():
        raise ConceptError(f"dissect.concepts: {source} does not exist; give a Broden-style "
                           "index.csv or a folder of concept folders")
    concepts = _read_folders(source) if source.is_dir() else _read_index(source)
    known = set(stems)
    unknown = [stem for stem in concepts.files if stem not in known]
    if unknown:
        logger.warning("dissect.concepts: masks for %d image(s) not in the dataset ignored: %s",
                       len(unknown), _listing(unknown))
    concepts.files = {stem: entries for stem, entries in concepts.files.items() if stem in known}
    if not concepts.files:
        raise ConceptError(f"dissect.concepts: no mask of {source} belongs to an image of the "
                           "dataset (images are matched by file name without extension)")
    return concepts
