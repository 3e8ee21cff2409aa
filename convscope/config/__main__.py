"""Print the configuration a run will use: ``python -m convscope.config [config.yaml ...]``.

``python -m convscope.config --markdown`` prints the config reference
(``config/README.md``) instead, generated from the schema.

Later files override earlier ones key by key (as Snakemake's ``--configfile``
does); keys nobody set take the schema's defaults. Each key is printed with
its description from the schema as a comment.
"""

from __future__ import annotations

import sys

import yaml

from convscope.config.reference import markdown_reference
from convscope.config.validate import ConfigError, describe_config, load_schema, merge_configs, validate_config


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        print(markdown_reference(load_schema()), end="")
        return 0
    raw: dict = {}
    try:
        for path in argv:
            with open(path) as fh:
                raw = merge_configs(raw, yaml.safe_load(fh) or {})
        config = validate_config(raw)
    except (OSError, ConfigError, yaml.YAMLError) as exc:
        print(f"convscope: {exc}", file=sys.stderr)
        return 2
    print(describe_config(config, load_schema()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
