"""Typed, read-only views of the config's sections, generated from the schema.

The schema (``convscope/config/schema.yaml``) is the one source: each class
here is built from it at import time with `dataclasses.make_dataclass`, one
field per key, typed from the key's JSON-Schema type (an ``enum`` becomes a
``Literal`` of its values), defaulting to the key's default, with the key's
schema in ``field.metadata["schema"]``. Editing the schema changes the
classes. `convscope.config.validate_config` fills the defaults of a config;
``from_dict`` builds a class from one *validated* section:

    cfg = validate_config(yaml.safe_load(open("my.yaml")))
    embedding = EmbeddingConfig.from_dict(cfg["embedding"])
    embedding.perplexity  # 30.0
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import operator
from typing import Any, ClassVar, Literal

from convscope.config.validate import load_schema

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
    "FaithfulnessConfig",
    "SimilarityConfig",
    "CkaConfig",
    "ProbesConfig",
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


#: dotted schema path of a section -> the name of its class
CLASS_NAMES: dict[str, str] = {
    "dataset": "DatasetConfig", "dataset.demo": "DemoDatasetConfig",
    "model": "ModelConfig", "model.train": "TrainConfig",
    "preprocess": "PreprocessConfig", "extract": "ExtractConfig", "units": "UnitsConfig",
    "unit_stats": "UnitStatsConfig", "filters": "FiltersConfig",
    "embedding": "EmbeddingConfig", "neighbours": "NeighboursConfig",
    "performance": "PerformanceConfig", "report": "ReportConfig",
    "explain": "ExplainConfig", "explain.images": "ExplainImagesConfig",
    "explain.attribution": "ExplainAttributionConfig",
    "explain.reconstructions": "ExplainReconstructionsConfig",
    "explain.invariance": "InvarianceConfig", "explain.correspondence": "CorrespondenceConfig",
    "explain.keypoints": "KeypointsConfig", "explain.faithfulness": "FaithfulnessConfig",
    "similarity": "SimilarityConfig", "similarity.cka": "CkaConfig",
    "similarity.probes": "ProbesConfig",
    "synthesis": "SynthesisConfig", "synthesis.visualisation": "VisualisationConfig",
    "synthesis.inversion": "InversionConfig", "synthesis.evolution": "EvolutionConfig",
    "synthesis.dream": "DreamConfig", "synthesis.style": "StyleConfig",
    "synthesis.adversarial": "AdversarialConfig", "synthesis.fooling": "FoolingConfig",
    "dissect": "DissectConfig", "ablation": "AblationConfig",
}

_JSON_TYPES = {"integer": int, "number": float, "string": str, "boolean": bool,
               "null": type(None), "object": dict, "array": list}


def python_type(schema: dict) -> Any:
    """The Python type of values a (sub)schema accepts: ``{"type": ["integer", "null"]}``
    -> ``int | None``, ``{"enum": ["a", "b"]}`` -> ``Literal["a", "b"]``."""
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    if "const" in schema:
        return Literal[schema["const"]]
    if "oneOf" in schema or "anyOf" in schema:
        return _union(python_type(s) for s in schema.get("oneOf", schema.get("anyOf")))
    kinds = schema.get("type")
    if kinds is None:
        return Any
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return _union(list[python_type(schema["items"])] if k == "array" and "items" in schema
                  else _JSON_TYPES[k] for k in kinds)


def _union(types) -> Any:
    return functools.reduce(operator.or_, list(types))


def _field(name: str, schema: dict, nested: type | None):
    """``(name, type, field)`` of one schema key for `dataclasses.make_dataclass`."""
    metadata = {"schema": schema}
    if nested is not None:
        return name, nested, dataclasses.field(default_factory=nested, metadata=metadata)
    default = schema["default"]
    if isinstance(default, (list, dict)):
        field = dataclasses.field(default_factory=functools.partial(copy.deepcopy, default),
                                  metadata=metadata)
    else:
        field = dataclasses.field(default=default, metadata=metadata)
    return name, python_type(schema), field


def _build(path: str, schema: dict, classes: dict[str, type]) -> type:
    """The section class of ``schema`` at dotted ``path`` (its subsections built first)."""
    fields, nested = [], {}
    for key, sub in schema["properties"].items():
        sub_path = f"{path}.{key}"
        section = _build(sub_path, sub, classes) if sub_path in CLASS_NAMES else None
        if section is not None:
            nested[key] = section
        fields.append(_field(key, sub, section))
    name = CLASS_NAMES[path]
    doc = f"``{path}``: " + " ".join(str(schema.get("description", "")).split())
    cls = dataclasses.make_dataclass(name, fields, bases=(Section,), frozen=True,
                                     namespace={"__doc__": doc, "__module__": __name__,
                                                "_nested": nested})
    classes[name] = cls
    return cls


def _build_all(schema: dict) -> dict[str, type]:
    classes: dict[str, type] = {}
    for key, sub in schema["properties"].items():
        if key in CLASS_NAMES:
            _build(key, sub, classes)
    return classes


_CLASSES = _build_all(load_schema())
globals().update(_CLASSES)

#: config key -> the class of that section (the top-level ``layers`` and
#: ``codes_layer`` are plain values: a list of module names and a name or None).
SECTIONS: dict[str, type[Section]] = {key: _CLASSES[name] for key, name in CLASS_NAMES.items()
                                      if "." not in key}
