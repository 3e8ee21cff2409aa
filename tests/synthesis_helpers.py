"""Shared setup of the synthesis tests: a tiny demo dataset, a demo CNN file, config sections."""

from pathlib import Path

import torch

from convscope.config import validate_config
from convscope.config.sections import (DemoDatasetConfig, ModelConfig, PreprocessConfig,
                                       SynthesisConfig)
from convscope.data.demo import generate_demo_dataset
from convscope.data.manifest import build_manifest, write_manifest
from convscope.nn.models import DemoCNN

SIZE = 16


def sections(**synthesis) -> tuple[ModelConfig, PreprocessConfig, SynthesisConfig]:
    """Validated demo model, 16 px preprocess and synthesis sections (``synthesis`` overrides)."""
    config = validate_config({"model": {"kind": "demo"}, "synthesis": synthesis,
                              "preprocess": {"input_size": SIZE, "resize": SIZE,
                                             "mean": [0.5] * 3, "std": [0.25] * 3}})
    return (ModelConfig.from_dict(config["model"]),
            PreprocessConfig.from_dict(config["preprocess"]),
            SynthesisConfig.from_dict(config["synthesis"]))


def demo_manifest(root: Path, n_images: int = 24) -> Path:
    """A generated demo dataset of ``n_images`` 24 px images (the model sees 16 px) and its manifest."""
    demo = DemoDatasetConfig.from_dict(validate_config({"dataset": {"demo": {
        "n_images": n_images, "image_size": 24, "seed": 3, "test_fraction": 0.25}}})
        ["dataset"]["demo"])
    generate_demo_dataset(demo, root / "demo" / "manifest.csv", root / "demo" / "images")
    manifest, class_names = build_manifest("manifest", root / "demo" / "manifest.csv")
    write_manifest(manifest, class_names, root / "manifest.csv")
    return root / "manifest.csv"


def demo_weights(path: Path, seed: int = 0) -> Path:
    """A randomly initialised (seeded) 10-class DemoCNN saved as a state dict."""
    torch.manual_seed(seed)
    model = DemoCNN(num_classes=10)
    with torch.no_grad():  # BatchNorm statistics that keep activations alive
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.fill_(0.05)
    torch.save(model.state_dict(), path)
    return path
