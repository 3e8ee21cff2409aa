"""Small helpers shared by the analysis stages: class names, figure files, manifest checks."""

from __future__ import annotations

import os
from collections.abc import Sequence

from convscope.store.atomic import atomic_path
from convscope.store.shards import read_attrs

__all__ = ["class_names", "class_name", "save_figure", "save_placeholder", "duplicate_paths"]


def class_names(shard_paths: Sequence[str | os.PathLike],
                manifest_csv: str | os.PathLike | None = None) -> list[str]:
    """Class names (index = class id) from the first shard's attributes, else from the manifest.

    ``manifest_csv`` is read only when the shards carry no ``class_names``;
    with neither, the list is empty.
    """
    names = read_attrs(shard_paths[0]).get("class_names") or []
    if not names and manifest_csv is not None:
        from convscope.data.manifest import read_manifest

        names = read_manifest(manifest_csv)[1]
    return [str(name) for name in names]


def class_name(names: Sequence[str], class_id: int) -> str:
    """The name of ``class_id``, or the id itself as text when ``names`` does not cover it."""
    class_id = int(class_id)
    return str(names[class_id]) if 0 <= class_id < len(names) else str(class_id)


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """Save a matplotlib figure as PNG at ``path``, atomically (extra keywords go to ``savefig``).

    Drawn at twice the figure's dpi (``HIDPI_SCALE``; a ``dpi`` keyword is scaled the same):
    the report shows it at its nominal size, sharp on high-density screens.
    """
    savefig_kwargs["dpi"] = HIDPI_SCALE * float(savefig_kwargs.get("dpi", fig.dpi))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig_kwargs)


#: Pixels per nominal pixel of the saved figures (2: "retina" density).
HIDPI_SCALE = 2


def save_placeholder(path: str | os.PathLike, message: str) -> None:
    """Save a small PNG at ``path`` showing only ``message`` (a stage with nothing to draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 1.5), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    save_figure(fig, path)


def duplicate_paths(manifest) -> dict:
    """Images that appear more than once in a manifest frame (same ``path`` and ``slot``).

    Returns ``{"paths": number of distinct images listed more than once,
    "rows": manifest rows that repeat an earlier one, "examples": up to 5 of
    those paths}``; ``slot`` tells apart the images of one array file.
    """
    keys = ["path", "slot"] if "slot" in manifest.columns else ["path"]
    repeated = manifest.duplicated(keys, keep="first")
    listed_twice = manifest.duplicated(keys, keep=False)
    distinct = manifest.loc[listed_twice, keys].drop_duplicates()
    return {"paths": int(len(distinct)), "rows": int(repeated.sum()),
            "examples": [str(p) for p in distinct["path"].head(5)]}
