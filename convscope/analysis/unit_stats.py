"""Per-channel unit statistics over the whole dataset, streamed shard by shard.

For every analysed layer and channel (a "unit") we report, over all images
in the shards (labelled or not):

``firing_rate``
    Fraction of images whose spatial maximum of the channel is above zero.
    "Above zero" is the definition even when the analysed layer is a
    pre-ReLU convolution output, so that a channel counts as firing exactly
    when a following ReLU would let something through.
``mean_activation``
    Mean over images of the per-image spatial mean (``layers/<key>/mean``).
``mean_max``
    Mean over images of the per-image spatial maximum (``layers/<key>/max``).
``max_activation``
    Largest spatial maximum over the whole dataset.
``dead``
    The channel never fires: its maximum is ``<= 0`` on every image.
``preferred_class``
    The class (name) with the highest mean of the per-image maximum, over
    images with a known label (smallest class id among ties; empty when no
    image has a label).
``class_selectivity``
    ``(mu_pref - mu_rest) / (mu_pref + mu_rest)`` (Morcos et al. 2018) over
    those class means, ``mu_rest`` the mean of the other classes' means; see
    `convscope.stats.class_means.class_selectivity` (0 when both are 0, NaN
    with fewer than two labelled classes).

``histograms.h5`` holds, per layer, a group named `layer_key(layer)` (attribute
``layer``: the name) with ``counts`` (C, B) int64 and ``edges`` (C, B+1)
float64: per channel, the histogram of the per-image maximum over all images
in ``unit_stats.histogram_bins`` equal bins from its minimum to its maximum
(as ``np.histogram(x, bins=B)``). A second pass over the shards counts them,
once the first pass has found every channel's range.

Per layer, ``summary.csv`` gives the number of channels, dead channels,
``dead_fraction`` (dead / channels) and ``sparsity``: the fraction of
(image, channel) pairs whose maximum is ``<= 0``, which equals the mean over
channels of ``1 - firing_rate``.

Images whose row holds a non-finite value (NaN / inf) in a layer's ``max`` or
``mean`` are skipped for that layer and counted in ``skipped``.

The accumulator `UnitStats` follows the running-statistics pattern
(``add(batch)``, ``result()``, ``state_dict()``, rebuilt from a state by its
constructor, ``merge`` for partial results), so per-shard partial results
can be combined in any order.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from convscope.analysis.common import class_name, class_names, save_figure
from convscope.analysis.layer_names import select_shard_layers
from convscope.config.sections import UnitStatsConfig
from convscope.stats.class_means import ClassMeans, class_selectivity
from convscope.stats.histogram import ChannelHistogram, histogram_edges
from convscope.store.atomic import atomic_path, write_text
from convscope.store.shards import iter_shards, layer_key, read_attrs
from convscope.store.tables import read_table

__all__ = [
    "UnitStats",
    "STATS_COLUMNS",
    "SUMMARY_COLUMNS",
    "stats_table",
    "summary_table",
    "read_dead_masks",
    "plot_firing_rates",
    "accumulate_unit_stats",
    "accumulate_histograms",
    "write_histograms",
    "run_unit_stats",
]

logger = logging.getLogger(__name__)

STATS_COLUMNS = ["layer", "channel", "firing_rate", "mean_activation", "mean_max",
                 "max_activation", "dead", "preferred_class", "class_selectivity"]
SUMMARY_COLUMNS = ["layer", "channels", "dead", "dead_fraction", "sparsity", "images"]


class UnitStats:
    """Running per-channel statistics of one layer over images.

    Parameters
    ----------
    channels : int
        Number of channels ``C`` of the layer.
    state : dict, optional
        A dict from `state_dict`; restores a saved accumulator (then
        ``channels`` may be omitted).

    Examples
    --------
    >>> acc = UnitStats(4)
    >>> acc.add(unit_max, unit_mean)      # (n, 4) arrays, any number of times
    >>> acc.result()["firing_rate"]       # (4,) float64
    """

    def __init__(self, channels: int | None = None, *, state: dict | None = None):
        if state is not None:
            self.count = int(state["count"])
            self.skipped = int(state["skipped"])
            self.fire_count = np.asarray(state["fire_count"], dtype=np.int64).copy()
            self.sum_mean = np.asarray(state["sum_mean"], dtype=np.float64).copy()
            self.sum_max = np.asarray(state["sum_max"], dtype=np.float64).copy()
            self.max_max = np.asarray(state["max_max"], dtype=np.float64).copy()
            self.min_max = np.asarray(state["min_max"], dtype=np.float64).copy()
            self.channels = int(self.fire_count.shape[0])
            return
        if channels is None or int(channels) < 1:
            raise ValueError(f"UnitStats needs channels >= 1, got {channels!r}")
        self.channels = int(channels)
        self.count = 0
        self.skipped = 0
        self.fire_count = np.zeros(self.channels, dtype=np.int64)
        self.sum_mean = np.zeros(self.channels, dtype=np.float64)
        self.sum_max = np.zeros(self.channels, dtype=np.float64)
        self.max_max = np.full(self.channels, -np.inf, dtype=np.float64)
        self.min_max = np.full(self.channels, np.inf, dtype=np.float64)

    def add(self, unit_max: np.ndarray, unit_mean: np.ndarray) -> None:
        """Accumulate a batch: ``unit_max`` and ``unit_mean`` of shape (n, C)."""
        unit_max = np.asarray(unit_max, dtype=np.float64)
        unit_mean = np.asarray(unit_mean, dtype=np.float64)
        if unit_max.ndim != 2 or unit_max.shape[1] != self.channels:
            raise ValueError(f"unit_max must have shape (n, {self.channels}), "
                             f"got {unit_max.shape}")
        if unit_mean.shape != unit_max.shape:
            raise ValueError(f"unit_mean shape {unit_mean.shape} differs from "
                             f"unit_max shape {unit_max.shape}")
        finite = np.isfinite(unit_max).all(axis=1) & np.isfinite(unit_mean).all(axis=1)
        self.skipped += int((~finite).sum())
        unit_max, unit_mean = unit_max[finite], unit_mean[finite]
        if unit_max.shape[0] == 0:
            return
        self.count += unit_max.shape[0]
        self.fire_count += (unit_max > 0).sum(axis=0)
        self.sum_mean += unit_mean.sum(axis=0)
        self.sum_max += unit_max.sum(axis=0)
        np.maximum(self.max_max, unit_max.max(axis=0), out=self.max_max)
        np.minimum(self.min_max, unit_max.min(axis=0), out=self.min_max)

    def merge(self, other: "UnitStats") -> None:
        """Add the counts of another accumulator of the same layer."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge UnitStats with {other.channels} channels "
                             f"into one with {self.channels}")
        self.count += other.count
        self.skipped += other.skipped
        self.fire_count += other.fire_count
        self.sum_mean += other.sum_mean
        self.sum_max += other.sum_max
        np.maximum(self.max_max, other.max_max, out=self.max_max)
        np.minimum(self.min_max, other.min_max, out=self.min_max)

    def result(self) -> dict[str, np.ndarray]:
        """Per-channel statistics, each of shape (C,); NaN where no image was seen.

        Keys: ``firing_rate``, ``mean_activation``, ``mean_max``,
        ``max_activation``, ``dead`` (bool), plus ``count`` (int, images seen).
        """
        n = self.count
        with np.errstate(invalid="ignore", divide="ignore"):
            firing_rate = self.fire_count / n if n else np.full(self.channels, np.nan)
            mean_activation = self.sum_mean / n if n else np.full(self.channels, np.nan)
            mean_max = self.sum_max / n if n else np.full(self.channels, np.nan)
        max_activation = np.where(np.isfinite(self.max_max), self.max_max, np.nan)
        return {
            "firing_rate": firing_rate,
            "mean_activation": mean_activation,
            "mean_max": mean_max,
            "max_activation": max_activation,
            "dead": (self.fire_count == 0) & (n > 0),
            "count": n,
        }

    def state_dict(self) -> dict:
        """Plain-array state; ``UnitStats(state=acc.state_dict())`` restores it."""
        return {
            "count": self.count,
            "skipped": self.skipped,
            "fire_count": self.fire_count.copy(),
            "sum_mean": self.sum_mean.copy(),
            "sum_max": self.sum_max.copy(),
            "max_max": self.max_max.copy(),
            "min_max": self.min_max.copy(),
        }


def stats_table(stats: dict[str, UnitStats], class_means: dict[str, ClassMeans],
                names: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (layer, channel) with the columns of `STATS_COLUMNS`.

    ``class_means`` (same layers as ``stats``) give the preferred class and
    its selectivity; ``names`` turn class ids into names (else the id).
    """
    frames = []
    for layer, acc in stats.items():
        res = acc.result()
        preferred, selectivity = class_selectivity(class_means[layer].result()["means"])
        frames.append(pd.DataFrame({
            "layer": layer,
            "channel": np.arange(acc.channels),
            "firing_rate": res["firing_rate"],
            "mean_activation": res["mean_activation"],
            "mean_max": res["mean_max"],
            "max_activation": res["max_activation"],
            "dead": res["dead"],
            "preferred_class": [class_name(names, c) if c >= 0 else "" for c in preferred],
            "class_selectivity": selectivity,
        }))
    if not frames:
        return pd.DataFrame(columns=STATS_COLUMNS)
    return pd.concat(frames, ignore_index=True)[STATS_COLUMNS]


def summary_table(stats: dict[str, UnitStats]) -> pd.DataFrame:
    """One row per layer with the columns of `SUMMARY_COLUMNS`.

    ``sparsity`` is the fraction of (image, channel) pairs with maximum
    ``<= 0`` (= mean over channels of ``1 - firing_rate``).
    """
    rows = []
    for layer, acc in stats.items():
        res = acc.result()
        dead = int(res["dead"].sum())
        sparsity = (float(1.0 - res["firing_rate"].mean()) if acc.count else math.nan)
        rows.append({
            "layer": layer,
            "channels": acc.channels,
            "dead": dead,
            "dead_fraction": dead / acc.channels,
            "sparsity": sparsity,
            "images": acc.count,
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def read_dead_masks(stats_csv: str | os.PathLike) -> dict[str, np.ndarray]:
    """Dead-channel masks from a ``stats.csv``: layer name -> (C,) bool."""
    table = read_table(stats_csv)
    missing = {"layer", "channel", "dead"} - set(table.columns)
    if missing:
        raise ValueError(f"{stats_csv} lacks columns {sorted(missing)}; "
                         f"expected the unit_stats output with {STATS_COLUMNS}")
    masks = {}
    for layer, rows in table.groupby("layer", sort=False):
        rows = rows.sort_values("channel")
        mask = np.zeros(int(rows["channel"].max()) + 1, dtype=bool)
        mask[rows["channel"].to_numpy(dtype=int)] = rows["dead"].astype(str).str.lower().isin(
            ["true", "1"]).to_numpy()
        masks[str(layer)] = mask
    return masks


def _firing_rate_panel(ax, layer: str, acc: UnitStats, edges: np.ndarray) -> None:
    """One layer's histogram of live channels' firing rates, dead channels as a red bar left of 0."""
    width = edges[1] - edges[0]
    res = acc.result()
    rate, dead = res["firing_rate"], res["dead"]
    live_rate = rate[~dead & np.isfinite(rate)]
    counts, _ = np.histogram(live_rate, bins=edges)
    ax.bar(edges[:-1], counts, width=width, align="edge", color="#4477aa",
           edgecolor="white", label="alive")
    ax.bar([-width], [int(dead.sum())], width=width, align="edge", color="#cc3311",
           label="dead")
    ax.set_xlim(-width * 1.2, 1.0)
    ax.set_title(f"{layer}: {int(dead.sum())}/{acc.channels} dead", fontsize=9)
    ax.set_xlabel("firing rate (fraction of images with max > 0)", fontsize=8)
    ax.set_ylabel("channels", fontsize=8)
    ax.tick_params(labelsize=7)


def plot_firing_rates(stats: dict[str, UnitStats], path: str | os.PathLike, bins: int) -> None:
    """Histogram of channel firing rates, one panel per layer; dead channels in red.

    Dead channels (firing rate exactly 0) get their own red bar left of 0 so
    they are not hidden inside the first bin. ``bins`` bins over 0..1
    (``unit_stats.firing_rate_histogram_bins``); the PNG is written atomically to ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(stats)
    ncols = min(3, max(1, len(layers)))
    nrows = max(1, math.ceil(len(layers) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    for ax, layer in zip(axes.flat, layers):
        _firing_rate_panel(ax, layer, stats[layer], edges)
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    if layers:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def accumulate_unit_stats(shard_paths: Sequence[str | os.PathLike], layers: Sequence[str] | None,
                          ) -> tuple[dict[str, UnitStats], dict[str, ClassMeans]]:
    """Stream over the shards: per layer, `UnitStats` of its ``max`` and ``mean`` arrays and
    `ClassMeans` of its ``max`` by the shards' ``label``.

    ``layers`` (``unit_stats.layers``) must be layers of the shards; None
    takes every layer. Images with non-finite values are skipped and logged.
    """
    shard_paths = [os.fspath(path) for path in shard_paths]
    if not shard_paths:
        raise ValueError("run_unit_stats: no shards given")
    layers = select_shard_layers(read_attrs(shard_paths[0]), layers, key="unit_stats.layers",
                                 source=f"shard {shard_paths[0]}")
    names = ["label"] + [f"layers/{layer_key(layer)}/{stat}" for layer in layers
                         for stat in ("max", "mean")]
    stats: dict[str, UnitStats] = {}
    by_class: dict[str, ClassMeans] = {}
    for chunk in tqdm(iter_shards(shard_paths, names), total=len(shard_paths),
                      desc="unit stats", unit="shard"):
        for layer in layers:
            unit_max = chunk[f"layers/{layer_key(layer)}/max"]
            unit_mean = chunk[f"layers/{layer_key(layer)}/mean"]
            if layer not in stats:
                stats[layer] = UnitStats(unit_max.shape[1])
                by_class[layer] = ClassMeans(unit_max.shape[1])
            stats[layer].add(unit_max, unit_mean)
            by_class[layer].add(chunk["label"], unit_max)
    for layer, acc in stats.items():
        if acc.skipped:
            logger.warning("layer %s: skipped %d image(s) with non-finite values",
                           layer, acc.skipped)
    return stats, by_class


def accumulate_histograms(shard_paths: Sequence[str | os.PathLike], stats: dict[str, UnitStats],
                          bins: int) -> dict[str, ChannelHistogram]:
    """Second pass over the shards: per layer of ``stats``, a `ChannelHistogram` of the
    per-image maximum in ``bins`` bins from each channel's smallest to largest value
    (``UnitStats.min_max`` .. ``max_max``, from the first pass)."""
    hists = {layer: ChannelHistogram(histogram_edges(acc.min_max, acc.max_max, bins))
             for layer, acc in stats.items()}
    names = [f"layers/{layer_key(layer)}/max" for layer in stats]
    for chunk in tqdm(iter_shards([os.fspath(p) for p in shard_paths], names),
                      total=len(shard_paths), desc="unit histograms", unit="shard"):
        for layer, hist in hists.items():
            unit_max = chunk[f"layers/{layer_key(layer)}/max"]
            hist.add(unit_max[np.isfinite(unit_max).all(axis=1)])  # as UnitStats skips
    for layer, hist in hists.items():
        if hist.outside:  # rows with a finite max but a non-finite mean fell out of the range
            logger.warning("layer %s: %d value(s) outside the histogram range, not counted",
                           layer, hist.outside)
    return hists


def write_histograms(path: str | os.PathLike, hists: dict[str, ChannelHistogram]) -> None:
    """``histograms.h5``: a group per layer (`layer_key`) with ``counts`` (C, B) int64 and
    ``edges`` (C, B+1) float64; written atomically, without timestamps (same bytes)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            for layer, hist in hists.items():
                group = f.create_group(layer_key(layer), track_order=True)
                group.attrs["layer"] = layer
                result = hist.result()
                group.create_dataset("counts", data=result["counts"].astype(np.int64),
                                     track_times=False)
                group.create_dataset("edges", data=result["edges"].astype(np.float64),
                                     track_times=False)


def run_unit_stats(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                   unit_stats: UnitStatsConfig, *, stats_csv: str | os.PathLike,
                   summary_csv: str | os.PathLike, plot_png: str | os.PathLike,
                   histograms_h5: str | os.PathLike) -> dict[str, UnitStats]:
    """The unit statistics stage: stream over the shards and write the four outputs.

    Args:
        shard_paths: extraction shards.
        manifest_csv: the manifest (class names when the shards carry none).
        unit_stats: the ``unit_stats`` section (``layers``, ``firing_rate_histogram_bins``,
            ``histogram_bins``).
        stats_csv: per-channel table (`STATS_COLUMNS`).
        summary_csv: per-layer table (`SUMMARY_COLUMNS`).
        plot_png: the firing-rate histograms (`plot_firing_rates`).
        histograms_h5: per-channel histograms of the per-image maximum (`write_histograms`).
    Returns:
        the accumulators by layer.
    """
    stats, by_class = accumulate_unit_stats(shard_paths, unit_stats.layers)
    summary = summary_table(stats)
    for row in summary.itertuples(index=False):
        logger.info("%s: %d/%d channels dead, sparsity %.3f over %d images",
                    row.layer, row.dead, row.channels, row.sparsity, row.images)
    names = class_names(list(shard_paths), manifest_csv)
    hists = accumulate_histograms(shard_paths, stats, unit_stats.histogram_bins)
    write_text(stats_csv, stats_table(stats, by_class, names).to_csv(index=False))
    write_text(summary_csv, summary.to_csv(index=False))
    plot_firing_rates(stats, plot_png, bins=unit_stats.firing_rate_histogram_bins)
    write_histograms(histograms_h5, hists)
    return stats
