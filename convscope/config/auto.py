"""What a config takes from its model, resolved without importing torch.

Two settings are read from the model rather than typed by the user:

- ``preprocess: auto`` (or ``preprocess.auto: true``): the keys of `AUTO_KEYS` the user did
  not set are taken from the torchvision weights' transforms or timm's data config;
- ``model.weights`` naming torchvision weights (``IMAGENET1K_V2``): their class names fill
  a null ``dataset.class_names``, and the rules read the file of the local torch cache.

Both need torch or timm, which reading a config must not import (``snakemake -n`` stays
torch-free), so `model_facts` asks a child process (``python -m convscope.nn.zoo``) and
remembers its answer in ``.snakemake/convscope/model-facts.json`` when the working
directory has a ``.snakemake`` folder (a workflow's), else for this process only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

__all__ = ["AUTO_KEYS", "FACTS_CACHE", "names_weights_enum", "is_weights_enum", "wants_facts",
           "no_transforms_message",
           "missing_auto_keys", "model_facts", "apply_model_facts", "weights_file"]

#: the preprocess keys ``preprocess: auto`` fills (those the user set win)
AUTO_KEYS = ("input_size", "resize", "crop", "mean", "std")
FACTS_CACHE = Path(".snakemake") / "convscope" / "model-facts.json"
_ENUM = re.compile(r"^([A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*$")
_memory: dict[str, dict] = {}


def names_weights_enum(weights) -> bool:
    """Whether a ``model.weights`` text is a torchvision weights name, not a file."""
    return bool(weights) and bool(_ENUM.match(str(weights))) and not Path(str(weights)).exists()


def is_weights_enum(model: dict) -> bool:
    """Whether ``model.weights`` names torchvision weights (not a file) of a torchvision model."""
    return model.get("kind") == "torchvision" and names_weights_enum(model.get("weights"))


def missing_auto_keys(raw: dict) -> list[str]:
    """The `AUTO_KEYS` ``preprocess: auto`` must fill in a raw config (before defaults): none
    without auto. ``preprocess: auto`` (a string) and ``preprocess.auto`` (a boolean) are
    removed in place: the validated config holds the values taken, not where they came from."""
    if raw.get("preprocess") == "auto":
        raw["preprocess"] = {"auto": True}
    section = raw.get("preprocess")
    if not isinstance(section, dict) or not isinstance(section.get("auto"), bool):
        return []  # (a non-boolean auto is left to the schema, which names it)
    if not section.pop("auto"):
        return []
    return [key for key in AUTO_KEYS if key not in section]


def no_transforms_message(kind) -> str:
    """Why ``preprocess: auto`` cannot be had for a model of ``kind`` (not timm, no weights
    named by enum), and what to do instead."""
    how = ("its weights are a file, whose transforms torchvision cannot know (name the weights "
           "instead, e.g. model.weights: IMAGENET1K_V2)" if kind == "torchvision"
           else f"model.kind {kind!r} carries no transforms")
    return (f"config key 'preprocess' is auto, but {how}; set preprocess.input_size, resize, "
            "crop, mean and std explicitly (as the model was trained)")


def wants_facts(config: dict, missing_auto: list[str]) -> bool:
    return bool(missing_auto) or is_weights_enum(config.get("model", {}))


def _cache_key(model: dict, preprocess: bool) -> str:
    key = {k: model.get(k) for k in ("kind", "name", "weights", "num_classes", "factory_kwargs")}
    key["torch_home"] = os.environ.get("TORCH_HOME")
    return json.dumps({"model": key, "preprocess": preprocess}, sort_keys=True)


def _read_cache() -> dict:
    try:
        return json.loads(FACTS_CACHE.read_text())
    except (OSError, ValueError):
        return {}


def _ask_child(model: dict, preprocess: bool) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run([sys.executable, "-m", "convscope.nn.zoo"], env=env, text=True,
                          input=json.dumps({"model": model, "preprocess": preprocess}),
                          capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise ValueError("could not read the model's preprocessing / class names "
                         f"(python -m convscope.nn.zoo failed): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def model_facts(model: dict, preprocess: bool) -> dict:
    """`convscope.nn.zoo.model_facts` of the ``model`` section, from the cache or a child
    process; `ValueError` with its message when the model cannot give them."""
    key = _cache_key(model, preprocess)
    use_disk = Path(".snakemake").is_dir()
    on_disk = _read_cache() if use_disk else {}
    # an answer with the preprocessing holds the rest too
    keys = [key] if preprocess else [_cache_key(model, True), key]
    cached = next((found for k in keys for found in (_memory.get(k), on_disk.get(k))
                   if found is not None), None)
    if cached is None or "weights_file" in cached.get("facts", {}) \
            and not Path(cached["facts"]["weights_file"]).is_file():
        cached = _ask_child(model, preprocess)
        if "facts" in cached:
            _memory[key] = cached
            if use_disk:
                from convscope.store.atomic import write_text

                FACTS_CACHE.parent.mkdir(parents=True, exist_ok=True)
                write_text(FACTS_CACHE, json.dumps({**_read_cache(), key: cached}, indent=1))
    if "error" in cached:
        raise ValueError(cached["error"])
    return cached["facts"]


def apply_model_facts(config: dict, missing_auto: list[str]) -> None:
    """Fill the auto preprocess keys ``missing_auto`` and a null ``dataset.class_names``
    from the model's facts (in place); `ValueError` when they cannot be had."""
    if not wants_facts(config, missing_auto):
        return
    model = config["model"]
    if missing_auto and model.get("kind") != "timm" and not is_weights_enum(model):
        raise ValueError(no_transforms_message(model.get("kind")))
    facts = model_facts(config["model"], preprocess=bool(missing_auto))
    given = facts.get("preprocess", {})
    for key in missing_auto:
        config["preprocess"][key] = given[key]
    if facts.get("class_names") and config.get("dataset", {}).get("class_names") is None:
        config.setdefault("dataset", {})["class_names"] = list(facts["class_names"])


def weights_file(config: dict) -> str | None:
    """The file the rules read for ``model.weights``: itself, or for torchvision weights
    named by enum the file of the local torch cache."""
    model = config["model"]
    if is_weights_enum(model):
        return model_facts(model, preprocess=False)["weights_file"]
    return model.get("weights")
