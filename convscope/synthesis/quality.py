"""The quality gate of every optimisation: what a synthesised image achieved, against what.

Every synthesis stage that optimises an image judges the image *as stored* (uint8, read
back as ``value / 255``), never the float tensor before saving, against a reference that
means something, and labels each result ``converged`` or ``did not converge`` by one rule
per kind (`RULES`, also in docs/usage.md, "Did the optimisation work?"):

- ``unit``: the unit's objective on the stored image (no random transform) is above the
  highest value of the same objective over the dataset's images (from the feature shards:
  ``layers/<name>/mean`` for the ``mean`` objective, ``layers/<name>/max`` for ``centre``,
  an upper bound of the centre value). Units that never fire on the dataset (``dead`` in
  ``units/stats.csv``) are not optimised; they are listed as dead;
- ``class``: the softmax probability of the image's own class is at least
  ``synthesis.visualisation.class_probability``;
- ``inversion``: the relative feature distance ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2`` of
  the reconstruction is at most half that of a seeded uniform-noise image;
- ``texture``: the Gram loss of the texture is at least `TEXTURE_FACTOR` times below that of
  the starting noise;
- ``fooling``: the target class's softmax probability is at least
  ``synthesis.fooling.confidence``;
- ``adversarial``: the target class's probability is above every other class's (the model's
  top class is the target);
- ``dream``: the L2 norm of the dreamed layer's activations on the dreamed image is above
  the original image's.

Each stage stores the verdicts in its HDF5 file (`h5_arrays`: ``quality/item``,
``quality/achieved``, ``quality/reference``, ``quality/converged``, ``quality/status``) and
in its summary's ``quality`` entry (`summary_entry`), which the report shows, failures as
"optimisation did not converge" after the successes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CONVERGED", "NOT_CONVERGED", "DEAD", "TEXTURE_FACTOR", "INVERSION_FACTOR", "RULES",
           "Verdict", "judge", "ordered", "stored01", "h5_arrays", "summary_entry", "count_line"]

CONVERGED = "converged"
NOT_CONVERGED = "did not converge"
DEAD = "dead (never fires on the dataset; not optimised)"

#: A texture converges when its Gram loss is at least this many times below the noise's.
TEXTURE_FACTOR = 10.0
#: A reconstruction converges when its feature distance is at most this times a random image's.
INVERSION_FACTOR = 0.5

#: The rule of each kind, as the report and docs/usage.md state it.
RULES = {
    "unit": "converged when the unit's objective on the stored (8-bit) image is above the "
            "highest value of the same objective over the dataset's images (the dataset best)",
    "class": "converged when the softmax probability of the image's own class, on the stored "
             "(8-bit) image, is at least synthesis.visualisation.class_probability",
    "inversion": "converged when the relative feature distance of the stored reconstruction "
                 f"is at most {INVERSION_FACTOR:g} times that of a random (uniform noise) image",
    "texture": f"converged when the Gram loss of the stored texture is at least "
               f"{TEXTURE_FACTOR:g} times below that of the starting noise",
    "fooling": "converged when the target class's softmax probability on the stored (8-bit) "
               "image is at least synthesis.fooling.confidence",
    "adversarial": "converged when the target class is the model's top class on the stored "
                   "(8-bit) image (its probability above the highest other class's)",
    "dream": "converged when the L2 norm of the dreamed layer's activations on the stored "
             "(8-bit) dreamed image is above that of the original image",
}


@dataclass(frozen=True)
class Verdict:
    """One result: ``item`` (what was optimised), ``achieved`` vs ``reference`` and its
    ``status`` (`CONVERGED`, `NOT_CONVERGED` or `DEAD`)."""

    item: str
    achieved: float
    reference: float
    status: str

    @property
    def converged(self) -> bool:
        return self.status == CONVERGED


def judge(items: Sequence[str], achieved, reference, *, higher_is_better: bool = True,
          factor: float = 1.0, inclusive: bool = False) -> list[Verdict]:
    """Verdicts of ``achieved`` against ``reference`` (arrays, one per item).

    Higher is better: converged when ``achieved > factor * reference`` (``>=`` when
    ``inclusive``); lower is better: when ``achieved <= factor * reference``. NaN never
    converges.
    """
    achieved = np.asarray(achieved, np.float64).reshape(-1)
    reference = np.broadcast_to(np.asarray(reference, np.float64), achieved.shape)
    bound = factor * reference
    with np.errstate(invalid="ignore"):
        if higher_is_better:
            ok = achieved >= bound if inclusive else achieved > bound
        else:
            ok = achieved <= bound
    return [Verdict(str(item), float(a), float(r), CONVERGED if good else NOT_CONVERGED)
            for item, a, r, good in zip(items, achieved, reference, ok)]


def stored01(images_uint8: np.ndarray, channels: int | None = None):
    """(N, H, W, C) uint8 -> (N, C, H, W) float32 torch tensor in 0..1: the image as stored.

    ``channels`` 1 keeps the first channel (grey models' images are stored as RGB)."""
    import torch

    array = np.asarray(images_uint8, np.uint8)
    array = np.ascontiguousarray(array[..., :1] if channels == 1 else array)
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def ordered(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """The verdicts, converged ones first, then the others (each group in its own order)."""
    return [v for v in verdicts if v.converged] + [v for v in verdicts if not v.converged]


def h5_arrays(verdicts: Sequence[Verdict], prefix: str = "quality") -> dict[str, np.ndarray]:
    """The verdicts as HDF5 datasets ``<prefix>/item|achieved|reference|converged|status``."""
    return {f"{prefix}/item": [v.item for v in verdicts],
            f"{prefix}/achieved": np.array([v.achieved for v in verdicts], np.float64),
            f"{prefix}/reference": np.array([v.reference for v in verdicts], np.float64),
            f"{prefix}/converged": np.array([v.converged for v in verdicts], bool),
            f"{prefix}/status": [v.status for v in verdicts]}


def _number(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.4g}"


def summary_entry(kind: str, verdicts: Sequence[Verdict], measure: str,
                  reference: str) -> dict:
    """The summary's ``quality`` entry of one group of results: the rule, what the numbers
    are (``measure``, ``reference``: text) and one result per item (``item``, ``status``,
    ``achieved``, ``reference``, the numbers as text)."""
    return {"kind": kind, "rule": RULES[kind], "measure": measure, "reference": reference,
            "results": [{"item": v.item, "status": v.status, "achieved": _number(v.achieved),
                         "reference": _number(v.reference)} for v in verdicts]}


def count_line(verdicts: Sequence[Verdict]) -> str:
    """``"30 of 32 converged"`` over the optimised results (dead ones left out), plus
    ``"; 2 dead"`` when there are dead ones."""
    tried = [v for v in verdicts if v.status != DEAD]
    dead = len(verdicts) - len(tried)
    line = f"{sum(v.converged for v in tried)} of {len(tried)} converged"
    return line + (f"; {dead} dead (not optimised)" if dead else "")
