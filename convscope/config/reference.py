"""The config reference (``config/README.md``), written from the schema.

    python -m convscope.config --markdown > config/README.md

Every key gets one table row: its dotted name, its default and its meaning
(the schema's description, the allowed values of an enum, its old spellings).
"""

from __future__ import annotations

import yaml

__all__ = ["markdown_reference"]

_HEADER = """\
# Configuration reference

<!-- Generated from convscope/config/schema.yaml by
     `python -m convscope.config --markdown > config/README.md`; do not edit by hand
     (tests/test_config.py checks that this file is current). -->

Every key of the workflow's configuration, with its default and meaning.
`config/config.yaml` is the demo's configuration, read only when no
`--configfile` is given; a config of yours starts from these defaults, so it
names only what it changes (see `config/examples/`). Print the whole
configuration a run will use with `python -m convscope.config your.yaml`.

Keys marked *old spelling* still work: they are read as the new key, with a
warning naming it; a config that gives both spellings is refused.
"""


def _value(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return "`" + text.strip().removesuffix("...").strip() + "`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _meaning(schema: dict) -> str:
    parts = [_cell(schema.get("description", ""))]
    if "enum" in schema:
        parts.append("Values: " + ", ".join(_value(v) for v in schema["enum"]))
    if schema.get("aliases"):
        parts.append("*Old spelling*: " + ", ".join(f"`{a}`" for a in schema["aliases"]))
    return "<br>".join(p for p in parts if p)


def _is_section(schema: dict) -> bool:
    return schema.get("type") == "object" and "properties" in schema


def _section(path: str, schema: dict, depth: int) -> list[str]:
    """Heading, description and key table of one section, then its subsections."""
    lines = ["", "#" * depth + f" `{path}`" if path else "#" * depth + " Top level", ""]
    if path:
        lines += [_cell(schema.get("description", "")), ""]
    rows = [(key, sub) for key, sub in schema["properties"].items() if not _is_section(sub)]
    if rows:
        lines += ["| key | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{path + '.' if path else ''}{key}` | {_value(sub.get('default'))} "
                  f"| {_meaning(sub)} |" for key, sub in rows]
    for key, sub in schema["properties"].items():
        if _is_section(sub):
            lines += _section(f"{path}.{key}" if path else key, sub, depth + 1 if path else depth)
    return lines


def markdown_reference(schema: dict) -> str:
    """``config/README.md``: every key of ``schema`` with its default and meaning."""
    return _HEADER + "\n".join(_section("", schema, 2)) + "\n"
