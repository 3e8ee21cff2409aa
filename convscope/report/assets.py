"""Writing the site's files: pages, copied figures, images and JavaScript data.

`SiteWriter` writes into a staging folder laid out like the final report
folder (``index.html``, ``pages/``, ``assets/``), so the relative links that
pages hold are the same before and after `publish` moves it into place. Every
figure a page shows is copied under ``assets/`` (nothing links outside the
folder), and data for the scripts goes in ``.js`` files that set
``window.convscope[name]``: ``fetch()`` of local files fails under ``file://``.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["SiteWriter", "STATIC_FILES", "JPEG_QUALITY"]

#: Quality of the JPEG sprite sheets of unit crops (PIL scale, 1-95).
JPEG_QUALITY = 85

#: The package's hand-written scripts and style sheet, copied to ``assets/static/``.
STATIC_FILES = ("site.css", "site.js", "gallery.js", "scatter.js", "zoom.js")


def _json_default(value):
    """JSON for numpy scalars; NaN and infinities become null (see `SiteWriter.write_data`)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.floating):
        return _finite(float(value))
    return value


class SiteWriter:
    """Files of one report build, written under ``root`` (paths are root-relative, "/"-separated)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, rel: str) -> Path:
        """Where the root-relative ``rel`` is written (its folder is created)."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def copy(self, src: str | os.PathLike, rel: str) -> str:
        """Copy the file ``src`` to ``rel``; returns ``rel``."""
        shutil.copyfile(src, self.path(rel))
        return rel

    def save_image(self, image, rel: str) -> str:
        """Save a PIL image at ``rel``: JPEG (quality `JPEG_QUALITY`) when ``rel`` ends in
        ``.jpg`` (photographic crops, where lossless is not needed), else PNG (fast
        compression); returns ``rel``. The staging folder as a whole appears atomically."""
        if rel.endswith(".jpg"):
            image.convert("RGB").save(self.path(rel), format="JPEG", quality=JPEG_QUALITY,
                                      optimize=True)
        else:
            image.save(self.path(rel), format="PNG", compress_level=1)
        return rel

    def density(self, rel: str) -> int:
        """2 for a PNG drawn at 2x (matplotlib figures saved at >= 190 dpi: shown at half
        their pixel size, sharp on high-density screens), else 1; 1 for a missing file."""
        target = self.root / rel
        if not rel.endswith(".png") or not target.is_file():
            return 1
        from PIL import Image

        with Image.open(target) as image:
            dpi = image.info.get("dpi", (72, 72))[0]
        return 2 if dpi >= 190 else 1

    def write_text(self, rel: str, text: str) -> str:
        """Write ``text`` at ``rel``; returns ``rel``."""
        self.path(rel).write_text(text, encoding="utf-8")
        return rel

    def write_data(self, rel: str, name: str, value) -> str:
        """A script file setting ``window.convscope[name] = value`` (JSON; NaN -> null)."""
        text = json.dumps(_finite(value), default=_json_default, separators=(",", ":"))
        text = text.replace("</", "<\\/")
        return self.write_text(rel, "window.convscope = window.convscope || {};\n"
                                    f"window.convscope[{json.dumps(name)}] = {text};\n")

    def copy_static(self) -> None:
        """Copy the package's scripts and style sheet to ``assets/static/``."""
        folder = resources.files("convscope.report") / "static"
        for name in STATIC_FILES:
            self.write_text(f"assets/static/{name}", (folder / name).read_text(encoding="utf-8"))

    def publish(self, index_html: str | os.PathLike, folders: dict[str, str | os.PathLike]) -> None:
        """Move the staged site into place: each staged folder ``folders`` names (staged
        name -> final path) replaces the old one, then ``index.html`` (renamed last, so a
        build cut short leaves no new index); the staging folder is removed."""
        for staged, final in folders.items():
            final = Path(final)
            if final.exists():
                shutil.rmtree(final)
            source = self.root / staged
            source.mkdir(parents=True, exist_ok=True)
            os.replace(source, final)
        os.replace(self.root / "index.html", index_html)
        shutil.rmtree(self.root)
