"""Typed, read-only views of the config's sections.

Defaults live in one place, the schema (``convscope/config/schema.yaml``);
`convscope.config.validate_config` fills them in. The classes here hold no
defaults of their own: each is built from one *validated* section with
``from_dict`` and has exactly the schema's keys as fields (a test checks this),
so a library function that takes, say, an `EmbeddingConfig` gets every setting
it may read, typed, and nothing else.

    cfg = validate_config(yaml.safe_load(open("my.yaml")))
    embedding = EmbeddingConfig.from_dict(cfg["embedding"])
    embedding.perplexity  # 30.0
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "Section",
    "DemoDatasetConfig",
    "DatasetConfig",
    "TrainConfig",
    "ModelConfig",
    "PreprocessConfig",
    "ExtractConfig",
    "UnitsConfig",
    "UnitStatsConfig",
    "FiltersConfig",
    "EmbeddingConfig",
    "NeighboursConfig",
    "PerformanceConfig",
    "ReportConfig",
    "ExplainImagesConfig",
    "ExplainAttributionConfig",
    "ExplainReconstructionsConfig",
    "InvarianceConfig",
    "CorrespondenceConfig",
    "KeypointsConfig",
    "ExplainConfig",
    "VisualisationConfig",
    "InversionConfig",
    "EvolutionConfig",
    "DreamConfig",
    "StyleConfig",
    "AdversarialConfig",
    "FoolingConfig",
    "SynthesisConfig",
    "SECTIONS",
]


class Section:
    """Base of the section classes: build from a validated dict, turn back into one."""

    _nested: ClassVar[dict[str, type]] = {}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a validated config section; an unknown or missing key raises ``TypeError``."""
        values = dict(values)
        for key, section_type in cls._nested.items():
            if isinstance(values.get(key), dict):
                values[key] = section_type.from_dict(values[key])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values))
        if unknown or missing:
            raise TypeError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing} "
                            "(build it from a config validated by validate_config)")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The section as the plain dict it was built from."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DemoDatasetConfig(Section):
    n_images: int
    image_size: int
    seed: int
    test_fraction: float


@dataclass(frozen=True)
class DatasetConfig(Section):
    kind: str
    path: str | None
    label_column: str | None
    path_column: str
    class_names: list[str] | str | None
    demo: DemoDatasetConfig

    _nested: ClassVar[dict[str, type]] = {"demo": DemoDatasetConfig}


@dataclass(frozen=True)
class TrainConfig(Section):
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    checkpoint_epochs: list[int] | None


@dataclass(frozen=True)
class ModelConfig(Section):
    kind: str
    name: str | None
    factory: str | None
    factory_kwargs: dict
    weights: str | None
    num_classes: int | None
    train: TrainConfig

    _nested: ClassVar[dict[str, type]] = {"train": TrainConfig}


@dataclass(frozen=True)
class PreprocessConfig(Section):
    input_size: int | list[int]
    channels: int
    resize: int | None
    crop: str
    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class ExtractConfig(Section):
    shard_size: int
    batch_size: int
    precision: str
    tf32: bool
    device: str
    num_workers: int
    thumb_size: int
    on_error: str
    decode: str


@dataclass(frozen=True)
class UnitsConfig(Section):
    topk: int
    patch_px: int
    max_channels: int


@dataclass(frozen=True)
class UnitStatsConfig(Section):
    layers: list[str] | None
    hist_bins: int
    histogram_bins: int


@dataclass(frozen=True)
class FiltersConfig(Section):
    layers: list[str] | None
    scale: str
    inputs_per_filter: int
    max_filters: int
    tile_px: int
    panel_images: int | list[int]
    panel_layers: list[str] | None
    seed: int


@dataclass(frozen=True)
class EmbeddingConfig(Section):
    l2_normalize: bool
    pca_dims: int | None
    perplexity: float
    n_iter: int
    early_exaggeration_iter: int
    learning_rate: str | float
    method: str
    neighbors: str
    seed: int
    fit_max: int
    transform_batch: int
    trust_sample: int
    trust_k: int
    grid_size: int
    grid_max: int
    exact_max_cells: int
    tile_px: int
    cloud_px: int
    cloud_max_images: int
    cloud_tile_px: int
    scatter_max_points: int


@dataclass(frozen=True)
class NeighboursConfig(Section):
    k: int
    queries_per_class: int
    max_query_classes: int
    query_indices: list[int]
    accuracy_k: list[int]
    spaces: list[str]
    pixel_metric: str
    pixel_space: str
    seed: int
    device: str
    block_mb: int
    tile_px: int


@dataclass(frozen=True)
class PerformanceConfig(Section):
    split: str
    n_bins: int
    max_categories: int
    exclude: list[str]
    compare_columns: list[str]


@dataclass(frozen=True)
class ReportConfig(Section):
    title: str
    patch_px: int
    gallery_page_size: int
    scatter_max_points: int


@dataclass(frozen=True)
class ExplainImagesConfig(Section):
    kind: str
    rows: list[int]
    per_class: int
    seed: int
    misclassified: int
    topk_units: list[dict]
    topk_images: int
    max_images: int


@dataclass(frozen=True)
class ExplainAttributionConfig(Section):
    methods: list[str]
    targets: list[str]
    occlusion_size: int
    occlusion_stride: int
    occlusion_fill: float
    occlusion_batch: int
    gradcam_layer: str | None
    zf_layer: str | None


@dataclass(frozen=True)
class ExplainReconstructionsConfig(Section):
    layers: list[str] | None
    channels: list[int] | None
    units_per_layer: int
    topk: int
    cell_px: int


@dataclass(frozen=True)
class InvarianceConfig(Section):
    n_images: int
    seed: int
    layers: list[str] | None
    translate_px: list[float]
    scale: list[float]
    rotation_deg: list[float]
    steps: int


@dataclass(frozen=True)
class CorrespondenceConfig(Section):
    target_class: str | int | None
    part_columns: list[str] | None
    part_units: str
    occluder_scale: float
    n_images: int
    n_random: int
    seed: int
    layers: list[str] | None


@dataclass(frozen=True)
class KeypointsConfig(Section):
    target_class: str | int | None
    n_pairs: int
    point_columns: list[str] | None
    point_units: str
    layers: list[str] | None
    pck_thresholds: list[float]
    pixel_patch_px: int
    panels: int
    seed: int


@dataclass(frozen=True)
class ExplainConfig(Section):
    device: str
    batch_size: int
    images: ExplainImagesConfig
    attribution: ExplainAttributionConfig
    reconstructions: ExplainReconstructionsConfig
    invariance: InvarianceConfig
    correspondence: CorrespondenceConfig
    keypoints: KeypointsConfig

    _nested: ClassVar[dict[str, type]] = {"images": ExplainImagesConfig,
                                          "attribution": ExplainAttributionConfig,
                                          "reconstructions": ExplainReconstructionsConfig,
                                          "invariance": InvarianceConfig,
                                          "correspondence": CorrespondenceConfig,
                                          "keypoints": KeypointsConfig}


@dataclass(frozen=True)
class VisualisationConfig(Section):
    classes: str | list[str]
    units: dict[str, str | list[int]] | None
    max_units: int
    objective: str
    steps: int
    learning_rate: float
    parametrisation: str
    decorrelate: bool
    transforms: bool
    jitter_px: int
    scales: list[float]
    rotate_degrees: float
    l2_decay: float
    blur_every: int
    blur_sigma: float
    clip_norm_percentile: float
    clip_contribution_percentile: float
    batch_size: int


@dataclass(frozen=True)
class InversionConfig(Section):
    layers: list[str] | None
    n_images: int
    steps: int
    learning_rate: float
    tv_beta: float
    tv_weight: float
    alpha: float
    alpha_weight: float


@dataclass(frozen=True)
class EvolutionConfig(Section):
    checkpoints: list[str]
    units: list[str]
    channels_per_layer: int
    sample_size: int


@dataclass(frozen=True)
class DreamConfig(Section):
    layer: str | None
    n_images: int
    octaves: int
    octave_scale: float
    steps: int
    lr: float
    jitter: int


@dataclass(frozen=True)
class StyleConfig(Section):
    texture_row: int | None
    content_row: int | None
    style_row: int | None
    content_layers: list[str] | None
    style_layers: list[str] | None
    content_weight: float
    style_weight: float
    steps: int
    optimiser: str
    lr: float


@dataclass(frozen=True)
class AdversarialConfig(Section):
    n_images: int
    seed: int
    fgsm_epsilon: float
    target: str | int
    steps: int
    step_size: float
    epsilon: float
    top_k: int


@dataclass(frozen=True)
class FoolingConfig(Section):
    classes: str | list[str | int]
    confidence: float
    max_steps: int
    lr: float


@dataclass(frozen=True)
class SynthesisConfig(Section):
    device: str
    seed: int
    visualisation: VisualisationConfig
    inversion: InversionConfig
    evolution: EvolutionConfig
    dream: DreamConfig
    style: StyleConfig
    adversarial: AdversarialConfig
    fooling: FoolingConfig

    _nested: ClassVar[dict[str, type]] = {"visualisation": VisualisationConfig,
                                          "inversion": InversionConfig,
                                          "evolution": EvolutionConfig,
                                          "dream": DreamConfig, "style": StyleConfig,
                                          "adversarial": AdversarialConfig,
                                          "fooling": FoolingConfig}


#: config key -> the class of that section (the top-level ``layers`` and
#: ``codes_layer`` are plain values: a list of module names and a name or None).
SECTIONS: dict[str, type[Section]] = {
    "dataset": DatasetConfig,
    "model": ModelConfig,
    "preprocess": PreprocessConfig,
    "extract": ExtractConfig,
    "units": UnitsConfig,
    "unit_stats": UnitStatsConfig,
    "filters": FiltersConfig,
    "embedding": EmbeddingConfig,
    "neighbours": NeighboursConfig,
    "performance": PerformanceConfig,
    "report": ReportConfig,
    "explain": ExplainConfig,
    "synthesis": SynthesisConfig,
}
