"""The workflow config: schema (package data), validation with defaults, typed sections, preflight.

Defaults and descriptions of every key live in ``schema.yaml`` beside this
file, and nowhere else.
"""

from convscope.config.sections import (SECTIONS, DatasetConfig, DemoDatasetConfig, EmbeddingConfig,
                                       ExtractConfig, FiltersConfig, ModelConfig,
                                       NeighboursConfig, PerformanceConfig, PreprocessConfig,
                                       ReportConfig, Section, TrainConfig, UnitsConfig,
                                       UnitStatsConfig)
from convscope.config.validate import (SCHEMA_PATH, ConfigError, config_hash, load_config,
                                       load_schema, validate_config)

__all__ = [
    "ConfigError", "SCHEMA_PATH", "config_hash", "load_config", "load_schema", "validate_config",
    "Section", "SECTIONS", "DatasetConfig", "DemoDatasetConfig", "ModelConfig", "TrainConfig",
    "PreprocessConfig", "ExtractConfig", "UnitsConfig", "UnitStatsConfig", "FiltersConfig",
    "EmbeddingConfig", "NeighboursConfig", "PerformanceConfig", "ReportConfig",
]
