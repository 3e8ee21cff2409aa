"""The workflow config: schema (package data), validation with defaults, typed sections, preflight.

Defaults and descriptions of every key live in ``schema.yaml`` beside this
file, and nowhere else.
"""

from convscope.config.sections import *  # noqa: F401,F403
from convscope.config.sections import __all__ as _sections_all
from convscope.config.validate import (ConfigError, SCHEMA_PATH, config_hash, load_config,
                                       load_schema, validate_config)

__all__ = ["ConfigError", "SCHEMA_PATH", "config_hash", "load_config", "load_schema",
           "validate_config", *_sections_all]
