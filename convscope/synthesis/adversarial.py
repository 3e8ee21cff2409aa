"""Adversarial examples: fast gradient sign and an iterative targeted attack.

Both work on the model's input pixels on the 0..1 scale (before the
preprocess mean/std, `convscope.synthesis.images.PixelModel`), so the
epsilons are in pixel units (0.03 is about 8/255) and every adversarial image
is a valid 0..255 image (clamped to 0..1).

- Fast gradient sign (Goodfellow et al. 2014): ``captum.robust.FGSM`` with the
  cross-entropy to the model's own top-1 prediction: ``x + eps * sign(grad)``
  (captum's gradient threshold is set to 0: the cross-entropy gradient of a confident
  prediction is far below captum's default 1e-6, yet its sign is the attack;
  only pixels with an exactly zero gradient stay unchanged).
  Success: the top-1 prediction changes.
- Iterative targeted attack (projected gradient descent, Madry et al. 2018;
  Kurakin et al.'s iterative least-likely class): ``captum.robust.PGD`` with
  ``targeted=True``, ``steps`` signed steps of ``step_size`` within an
  L-infinity ball of radius ``epsilon``, no random start (deterministic).
  Target: a class of the config, or each image's least likely class.
  Success: the top-1 prediction is the target.

Written here: only the choice of targets, the norms and the figures.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from captum.robust import FGSM, PGD

from convscope.analysis.common import class_name, save_figure
from convscope.config.counts import clip_count
from convscope.config.sections import AdversarialConfig, ModelConfig, PreprocessConfig
from convscope.store.atomic import write_text
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.images import (PixelModel, class_ids, open_stage, read_pixels,
                                        rgb_uint8, sample_rows)
from convscope.synthesis.quality import (RULES, Verdict, count_line, h5_arrays, judge, ordered,
                                         stored01, summary_entry)

__all__ = ["TABLE_COLUMNS", "fgsm", "iterative_targeted", "choose_targets", "top_k",
           "attack_table", "adversarial_quality", "run_adversarial"]

#: Columns of ``table.csv``: one row per attack.
TABLE_COLUMNS = ["attack", "images", "success_rate", "mean_l2", "mean_linf", "epsilon"]


@contextlib.contextmanager
def _quiet_captum() -> Iterator[None]:
    """Silence captum's note that it switched on the gradients of the input (it must)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require")
        yield


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target, reduction="none")


def fgsm(model: PixelModel, pixels: torch.Tensor, labels: torch.Tensor,
         epsilon: float) -> torch.Tensor:
    """Fast gradient sign images of (N, C, H, W) pixels in 0..1 away from ``labels`` (N,)."""
    attack = FGSM(model, loss_func=_cross_entropy, lower_bound=0.0, upper_bound=1.0)
    attack.zero_thresh = 0.0  # module docstring
    with _quiet_captum():
        return attack.perturb(pixels, epsilon, target=labels).detach()


def iterative_targeted(model: PixelModel, pixels: torch.Tensor, targets: torch.Tensor,
                       adversarial: AdversarialConfig) -> torch.Tensor:
    """Projected-gradient images of (N, C, H, W) pixels in 0..1 toward ``targets`` (N,)."""
    attack = PGD(model, loss_func=_cross_entropy, lower_bound=0.0, upper_bound=1.0)
    attack.fgsm.zero_thresh = 0.0  # as in `fgsm`
    with _quiet_captum():
        return attack.perturb(pixels, radius=adversarial.epsilon,
                              step_size=adversarial.step_size, step_num=adversarial.steps,
                              target=targets, targeted=True, random_start=False,
                              norm="Linf").detach()


def top_k(model: PixelModel, pixels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) classes and softmax probabilities, most probable first."""
    with torch.no_grad():
        probs = torch.softmax(model(pixels).float(), dim=1)
    values, classes = probs.topk(min(k, probs.shape[1]), dim=1)
    return classes, values


def choose_targets(model: PixelModel, pixels: torch.Tensor, target: str | int,
                   names: Sequence[str]) -> torch.Tensor:
    """(N,) target classes: each image's least likely class, or the one configured class."""
    with torch.no_grad():
        logits = model(pixels)
    if target == "least_likely":
        return logits.argmin(dim=1)
    (class_id,) = class_ids([target], names, logits.shape[1], "synthesis.adversarial.target")
    return torch.full((len(pixels),), class_id, dtype=torch.long, device=pixels.device)


def _norms(delta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    flat = delta.flatten(1).double().cpu()
    return flat.norm(dim=1).numpy(), flat.abs().amax(dim=1).numpy()


def attack_table(results: dict[str, dict], epsilons: dict[str, float]) -> pd.DataFrame:
    """`TABLE_COLUMNS` from per-attack ``success`` (N,) bools and ``l2``/``linf`` (N,) norms."""
    return pd.DataFrame([{"attack": name, "images": len(r["success"]),
                          "success_rate": float(np.mean(r["success"])),
                          "mean_l2": float(np.mean(r["l2"])),
                          "mean_linf": float(np.mean(r["linf"])),
                          "epsilon": epsilons[name]} for name, r in results.items()],
                        columns=TABLE_COLUMNS)


def _attack(model, pixels, adversarial: AdversarialConfig, names) -> dict[str, dict]:
    """Both attacks on one batch: images, perturbations, top-k after, success, norms."""
    before_cls, _ = top_k(model, pixels, 1)
    targets = choose_targets(model, pixels, adversarial.target, names)
    images = {"fgsm": fgsm(model, pixels, before_cls[:, 0], adversarial.fgsm_epsilon),
              "iterative": iterative_targeted(model, pixels, targets, adversarial)}
    results = {}
    for name, adv in images.items():
        classes, probs = top_k(model, adv, adversarial.top_k)
        goal = classes[:, 0] != before_cls[:, 0] if name == "fgsm" else classes[:, 0] == targets
        l2, linf = _norms(adv - pixels)
        results[name] = {"pixels": adv, "classes": classes.cpu().numpy(),
                         "probs": probs.cpu().numpy(), "success": goal.cpu().numpy(),
                         "l2": l2, "linf": linf}
    results["iterative"]["target"] = targets.cpu().numpy()
    return results


@torch.no_grad()
def adversarial_quality(model: PixelModel, iterative: dict, rows: Sequence[int],
                        names: Sequence[str], channels: int) -> list[Verdict]:
    """Verdicts of the iterative targeted attack on its stored (8-bit) images (rule
    ``adversarial``): the target's probability against the highest other class's."""
    stored = stored01(iterative["uint8"], channels).to(model.scale.device)
    probs = torch.softmax(model(stored), dim=1).double().cpu()
    target = torch.as_tensor(iterative["target"]).long()
    picked = torch.arange(len(target))
    achieved = probs[picked, target].clone()
    probs[picked, target] = -1.0
    items = [f"manifest row {int(r)} -> {class_name(names, int(t))}" for r, t in zip(rows, target)]
    return judge(items, achieved.numpy(), probs.max(1).values.numpy())


def _top_text(classes: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> str:
    return "\n".join(f"{class_name(names, c)}  {p:.3f}" for c, p in zip(classes, probs))


def _panel(path, original: np.ndarray, rows: list[dict], before: str, names) -> None:
    """One image's panel: per attack, original | perturbation magnified | adversarial | top-k."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 2.3 * len(rows)), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for ax_row, row in zip(axes, rows):
        delta = row["adv"].astype(np.float64) - original.astype(np.float64)
        gain = 127.5 / max(np.abs(delta).max(), 1.0)
        shown = np.clip(127.5 + gain * delta, 0, 255).astype(np.uint8)
        pictures = [(original, "original"), (shown, f"perturbation x{gain:.0f}"),
                    (row["adv"], row["title"])]
        for ax, (image, title) in zip(ax_row, pictures):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        ax_row[3].axis("off")
        ax_row[3].text(0, 1, f"before:\n{before}", va="top", fontsize=7, family="monospace")
        ax_row[3].text(0.5, 1, f"after:\n{row['after']}", va="top", fontsize=7,
                       family="monospace", transform=ax_row[3].transAxes)
    fig.tight_layout()
    save_figure(fig, path)


def _write_panels(panels_dir, rows, originals, before, results, names) -> list[str]:
    """One PNG per image (`_panel`); returns their paths."""
    Path(panels_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, row in enumerate(rows):
        attacks = []
        for name, result in results.items():
            title = "FGSM" if name == "fgsm" else \
                f"iterative -> {class_name(names, result['target'][i])}"
            status = "success" if result["success"][i] else "failed"
            attacks.append({"adv": result["uint8"][i], "title": f"{title} ({status})",
                            "after": _top_text(result["classes"][i], result["probs"][i], names)})
        path = Path(panels_dir) / f"row-{int(row):05d}.png"
        _panel(path, originals[i], attacks, _top_text(before[0][i], before[1][i], names), names)
        paths.append(str(path))
    return paths


def run_adversarial(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
                    preprocess: PreprocessConfig, adversarial: AdversarialConfig,
                    manifest_csv: str | os.PathLike, *, device: str, panels_dir: str | os.PathLike,
                    table_csv: str | os.PathLike, h5_path: str | os.PathLike,
                    summary_json: str | os.PathLike) -> pd.DataFrame:
    """The adversarial stage: both attacks on a seeded sample of images; panels per image,
    ``table.csv`` (`TABLE_COLUMNS`), HDF5 and ``summary.json``; ``device`` is
    ``synthesis.device``. Returns the table."""
    model, manifest, names = open_stage(model_cfg, weights_file, preprocess, device,
                                        manifest_csv)
    rows = sample_rows(manifest, adversarial.n_images, adversarial.seed)
    clip_count("synthesis.adversarial.n_images", adversarial.n_images, len(rows),
               "readable images")
    pixels = read_pixels(manifest, rows, preprocess).to(model.scale.device)
    before = [a.cpu().numpy() for a in top_k(model, pixels, adversarial.top_k)]
    results = _attack(model, pixels, adversarial, names)
    for result in results.values():
        result["uint8"] = rgb_uint8(result["pixels"])
    verdicts = adversarial_quality(model, results["iterative"], rows, names,
                                   int(preprocess.channels))
    originals = rgb_uint8(pixels)
    panels = _write_panels(panels_dir, rows, originals, before, results, names)
    table = attack_table(results, {"fgsm": adversarial.fgsm_epsilon,
                                   "iterative": adversarial.epsilon})
    write_text(table_csv, table.to_csv(index=False))
    arrays = {"rows": rows, "original": originals, "before/classes": before[0],
              "before/probs": before[1], "iterative/target": results["iterative"]["target"]}
    for name, result in results.items():
        arrays.update({f"{name}/{key}": result[key] for key in
                       ("uint8", "classes", "probs", "success", "l2", "linf")})
        arrays[f"{name}/perturbation"] = (result["pixels"] - pixels).cpu().numpy()
    arrays.update(h5_arrays(verdicts, "iterative/quality"))
    write_h5(h5_path, arrays, {"pixel_scale": "0..1 before the preprocess mean/std",
                               "target": str(adversarial.target),
                               "rule": RULES["adversarial"]})
    print(table.to_string(index=False))
    folder = Path(summary_json).parent
    write_summary(
        summary_json, "synthesis_adversarial", "Adversarial examples",
        "Per image: the original, the perturbation (magnified) and the adversarial image, for "
        f"the fast gradient sign (epsilon {adversarial.fgsm_epsilon} on the 0..1 pixel scale) "
        f"and an iterative targeted attack ({adversarial.steps} steps within "
        f"{adversarial.epsilon}, target {adversarial.target}), with the top predictions "
        "before and after. The table gives success rates and mean perturbation norms.",
        numbers={**{f"{r.attack} success rate": f"{r.success_rate:.0%}"
                    for r in table.itertuples()},
                 "iterative attack (stored images)": count_line(verdicts)},
        quality=[summary_entry("adversarial", ordered(verdicts), "probability of the target "
                               "class on the stored image", "the highest other class's")],
        figures=[figure_entry(p, folder, f"manifest row {int(r)}") for p, r in zip(panels, rows)],
        tables=[figure_entry(table_csv, folder, "attacks", "success rate and mean L2 / "
                             "L-infinity norm of the perturbation (0..1 pixel scale)")])
    return table
