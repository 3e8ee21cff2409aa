"""`Results`: a run's ``results/`` folder as DataFrames and lazily read arrays.

Every accessor reads the files a stage wrote (through the store's shard
readers for the shards); nothing is recomputed. A file whose stage did not run
raises `StageMissingError` naming the stage and what enables it.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from convscope.results.arrays import ShardArray
from convscope.results.outputs import StageOutput
from convscope.results.stages import STAGES, require, resolve
from convscope.store.tables import read_table

__all__ = ["Results"]

#: statistics per image and channel stored in the shards (`activations`)
STATISTICS = ("max", "mean", "argmax")

#: the performance stage's tables (`attribute_table`)
PERFORMANCE_TABLES = ("overall", "per_class", "per_attribute", "confusion", "comparison",
                      "agreement", "comparison_examples")


class Results:
    """The ``results/`` folder of a convscope run (or the run's folder holding ``results/``).

    Example::

        from convscope import Results
        results = Results("results")
        results.topk("relu3", unit=17)      # the top-k images of relu3 unit 17
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not (path / "manifest.csv").exists() and (path / "results" / "manifest.csv").exists():
            path = path / "results"
        if not path.is_dir():
            raise FileNotFoundError(f"results folder {path} does not exist")
        self.path = path.absolute()  # paths read from it stay valid after a change of folder

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r})"

    def _file(self, relative: str, what: str) -> Path:
        return require(self.path, relative, what)

    def _read_json(self, relative: str, what: str):
        return json.loads(self._file(relative, what).read_text())

    # ------------------------------------------------------------------ model and images

    @cached_property
    def model_info(self) -> dict:
        """``model/model_info.json`` as a dict (input size, classes, layers, codes, model identity).

        Example: ``results.model_info["num_classes"]``
        """
        return self._read_json("model/model_info.json", "model_info")

    @property
    def layers(self) -> pd.DataFrame:
        """One row per analysed layer (index: name): ``channels``, ``height``, ``width`` of its
        output and its receptive field ``rf_size``, ``rf_stride`` ([h, w], input pixels) and
        ``rf_start`` ([y, x] of output position (0, 0)).

        Example: ``results.layers.loc["relu2", "rf_size"]``  ->  ``[10, 10]``
        """
        rows = []
        for name, layer in self.model_info["layers"].items():
            field = layer["receptive_field"]
            channels, height, width = (list(layer["shape"]) + [1, 1])[:3]
            rows.append({"layer": name, "channels": channels, "height": height, "width": width,
                         "rf_size": list(field["size"]), "rf_stride": list(field["stride"]),
                         "rf_start": list(field["start"])})
        return pd.DataFrame(rows).set_index("layer")

    @cached_property
    def class_names(self) -> list[str]:
        """Class names, index = class id (``manifest.classes.json``).

        Example: ``results.class_names[:3]``
        """
        from convscope.data.manifest import read_class_names

        return read_class_names(self._file("manifest.classes.json", "class_names"))

    @cached_property
    def manifest(self) -> pd.DataFrame:
        """The manifest (one row per image of the dataset), ``path`` resolved to a full path.

        Example: ``results.manifest.columns``
        """
        from convscope.data.manifest import read_manifest

        manifest = read_manifest(self._file("manifest.csv", "manifest"),
                                 self._file("manifest.classes.json", "manifest"))[0]
        manifest["path"] = [os.path.normpath(self.path / p) for p in manifest["path"]]
        return manifest

    @cached_property
    def shard_index(self) -> dict:
        """``features/index.json``: the checked listing of the feature shards.

        Example: ``results.shard_index["images"]``  ->  ``120``
        """
        return self._read_json("features/index.json", "the feature shards")

    @property
    def shard_paths(self) -> list[Path]:
        """The feature shard files, in row order (paths resolved against the results folder).

        Example: ``[p.name for p in results.shard_paths]``
        """
        return [resolve(self.path, s["path"]) for s in self.shard_index["shards"]]

    @cached_property
    def images(self) -> pd.DataFrame:
        """One row per extracted image: ``id`` (manifest row), ``path``, ``split``, ``label``,
        ``class_name``, ``prediction`` (top-1 class id), ``prediction_name``, ``correct`` (NA
        when the label is unknown), then the manifest's and the shards' image attributes.

        Example: ``results.images.groupby("class_name")["correct"].mean()``
        """
        from convscope.report.readers import read_image_table

        table = read_image_table([str(p) for p in self.shard_paths], self.manifest)
        table = table.rename(columns={"index": "id", "pred": "prediction"})
        paths = self.manifest[["index", "path", "split"]].rename(columns={"index": "id"})
        table = table.merge(paths, on="id", how="left")
        names = np.asarray(self.class_names + ["?"], dtype=object)
        known = table["label"] >= 0
        table["class_name"] = np.where(known, names[np.where(known, table["label"], -1)], "")
        table["prediction_name"] = names[table["prediction"].clip(0, len(self.class_names))]
        table["correct"] = (table["label"] == table["prediction"]).astype("boolean")
        table.loc[~known, "correct"] = pd.NA
        front = ["id", "path", "split", "label", "class_name", "prediction", "prediction_name",
                 "correct"]
        return table[front + [c for c in table.columns if c not in front]]

    # ------------------------------------------------------------------ units

    def _check_layer(self, layer: str) -> None:
        names = list(self.model_info["layers"])
        if layer not in names:
            raise KeyError(f"layer {layer!r} was not analysed in this run; the layers are "
                           f"{names} (config key `layers`)")

    def stats(self, layer: str) -> pd.DataFrame:
        """Per-channel statistics of ``layer``, one row per channel, the columns of
        ``units/stats.csv``: ``layer``, ``channel``, ``firing_rate``, ``mean_activation``,
        ``mean_max``, ``max_activation``, ``dead`` (bool), ``preferred_class``,
        ``class_selectivity``.

        Example: ``results.stats("relu2").nlargest(5, "max_activation")``
        """
        from convscope.report.readers import read_unit_stats

        self._check_layer(layer)
        table = read_unit_stats(self._file("units/stats.csv", f"stats({layer!r})"))
        return table[table["layer"] == layer].reset_index(drop=True)

    def topk(self, layer: str, unit: int | None = None) -> pd.DataFrame:
        """The top-k images of every unit of ``layer`` (or of one ``unit``): the rows of
        ``units/topk.csv``: ``layer``, ``channel``, ``rank``, ``id`` (the image's manifest row,
        ``index`` in the file), ``value`` (its activation), ``fy``, ``fx`` (feature-map
        position) and the receptive-field box ``x0``, ``y0``, ``x1``, ``y1`` (pixels of the
        original image).

        Example: ``results.topk("relu3", unit=17)``
        """
        self._check_layer(layer)
        table = read_table(self._file("units/topk.csv", f"topk({layer!r})"))
        table = table[table["layer"].astype(str) == layer]
        if unit is not None:
            channels = self.layers.loc[layer, "channels"]
            if not 0 <= int(unit) < channels:
                raise IndexError(f"unit {unit} of layer {layer!r}: it has channels "
                                 f"0..{channels - 1}")
            table = table[table["channel"] == int(unit)]
        return table.rename(columns={"index": "id"}).reset_index(drop=True)

    def unit_summary(self) -> pd.DataFrame:
        """One row per layer: ``channels``, ``dead``, ``dead_fraction``, ``sparsity``,
        ``images`` (``units/summary.csv``).

        Example: ``results.unit_summary().set_index("layer")["dead_fraction"]``
        """
        return read_table(self._file("units/summary.csv", "unit_summary()"))

    def activations(self, layer: str, statistic: str = "max") -> ShardArray:
        """Per-image, per-channel ``statistic`` (``max``, ``mean`` or ``argmax``: the flat
        spatial position y * W + x of the maximum) of ``layer``: an ``(n_images, C)``
        `ShardArray` read lazily, shard by shard; rows in the order of `images`.

        Example::

            acts = results.activations("relu2", "mean")
            acts[:5]                        # first five images, every channel
            for chunk in acts.iter_shards(): ...
        """
        from convscope.store.shards import layer_key

        if statistic not in STATISTICS:
            raise ValueError(f"statistic {statistic!r}: choose one of {list(STATISTICS)}")
        self._check_layer(layer)
        return self._shard_array(f"layers/{layer_key(layer)}/{statistic}")

    def _shard_array(self, dataset: str) -> ShardArray:
        rows = [s["images"] for s in self.shard_index["shards"]]
        return ShardArray(self.shard_paths, dataset, rows)

    def codes(self, lazy: bool = False) -> tuple[np.ndarray, np.ndarray | ShardArray]:
        """``(ids, codes)``: manifest row of each image (n,) and the CNN code matrix (n, D)
        (the `codes_layer`); with ``lazy=True`` the codes come as a `ShardArray`.

        Example: ``ids, codes = results.codes()``
        """
        from convscope.store.shards import read_concat

        paths = [str(p) for p in self.shard_paths]
        ids = read_concat(paths, "index") if paths else np.zeros(0, np.int64)
        array = self._shard_array("codes")
        return ids, array if lazy else array.read()

    # ------------------------------------------------------------------ analyses

    def embedding(self) -> pd.DataFrame:
        """The t-SNE map: ``embedding/coords.csv``, one row per image: ``id`` (manifest row,
        ``index`` in the file), ``x``, ``y``, ``label``, ``fitted`` (a point of the fit, not
        placed afterwards), ``grid_row``, ``grid_col`` (its mosaic cell).

        Example: ``results.embedding().plot.scatter("x", "y")``
        """
        table = read_table(self._file("embedding/coords.csv", "embedding()"))
        return table.rename(columns={"index": "id"})

    def embedding_summary(self) -> dict:
        """``embedding/embedding.json``: the PCA / t-SNE settings and what they achieved.

        Example: ``results.embedding_summary()["n_images"]``
        """
        return self._read_json("embedding/embedding.json", "embedding_summary()")

    def neighbours(self) -> pd.DataFrame:
        """Nearest neighbours of the query images in code space and pixel space:
        ``neighbours/queries.csv``.

        Example: ``results.neighbours().head()``
        """
        return read_table(self._file("neighbours/queries.csv", "neighbours()"))

    def knn_accuracy(self) -> dict:
        """``neighbours/knn_accuracy.json``: k-NN accuracy in code space vs pixel space.

        Example: ``results.knn_accuracy()``
        """
        return self._read_json("neighbours/knn_accuracy.json", "knn_accuracy()")

    def attribute_table(self, name: str = "per_attribute") -> pd.DataFrame:
        """A performance table: ``overall``, ``per_class``, ``per_attribute``, ``confusion``,
        ``comparison``, ``agreement``, ``comparison_examples`` (``performance/<name>.csv``),
        or an attribute's name: its rows of ``per_attribute.csv``.

        Example: ``results.attribute_table("colour")``
        """
        if name in PERFORMANCE_TABLES:
            return read_table(self._file(f"performance/{name}.csv", f"attribute_table({name!r})"))
        table = read_table(self._file("performance/per_attribute.csv",
                                       f"attribute_table({name!r})"))
        attributes = list(dict.fromkeys(table["attribute"].astype(str)))
        if name not in attributes:
            raise KeyError(f"no performance table or attribute {name!r}; tables: "
                           f"{list(PERFORMANCE_TABLES)}; attributes: {attributes}")
        return table[table["attribute"].astype(str) == name].reset_index(drop=True)

    # ------------------------------------------------------------------ explain, synthesis

    @property
    def explanations(self) -> list[str]:
        """Names of the explanation stages with a ``summary.json``.

        Example: ``results.explanations``  ->  ``['attribution', 'invariance', 'units']``
        """
        return _stages_in(self.path / "explain")

    @property
    def syntheses(self) -> list[str]:
        """Names of the synthesis stages with a ``summary.json``.

        Example: ``results.syntheses``  ->  ``['adversarial', 'classes', 'dream', ...]``
        """
        return _stages_in(self.path / "synthesis")

    def explanation(self, name: str) -> StageOutput:
        """The outputs of one explanation stage (``attribution``, ``units``, ``invariance``,
        ``correspondence``, ``keypoints``): summary, HDF5 datasets, tables.

        Example: ``results.explanation("attribution").summary["title"]``
        """
        return self._stage_output("explain", name)

    def synthesis(self, name: str) -> StageOutput:
        """The outputs of one synthesis stage (``classes``, ``units``, ``inversion``,
        ``evolution``, ``dream``, ``style``, ``adversarial``, ``fooling``).

        Example: ``results.synthesis("dream").read("dreamed")``
        """
        return self._stage_output("synthesis", name)

    def explained_images(self) -> pd.DataFrame:
        """The images the explanation stages explain (``explain/images.csv``): ``id``,
        ``path`` (full path), ``slot``, ``label``, ``predicted``, ``probability``, ``reason``.

        Example: ``results.explained_images()[["id", "reason"]]``
        """
        table = read_table(self._file("explain/images.csv", "explained_images()"))
        table["path"] = [os.path.normpath(self.path / p) for p in table["path"].astype(str)]
        return table.rename(columns={"index": "id"})

    def _stage_output(self, kind: str, name: str) -> StageOutput:
        if f"{kind}/{name}" not in STAGES:
            known = sorted(s.split("/", 1)[1] for s in STAGES if s.startswith(kind + "/"))
            raise KeyError(f"no {kind} stage {name!r}; the stages are {known}")
        summary = self._file(f"{kind}/{name}/summary.json", f"{kind}('{name}')")
        return StageOutput(f"{kind}/{name}", summary.parent)


def _stages_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.parent.name for p in folder.glob("*/summary.json"))

