"""The docs name only what exists: module files and dotted modules, link targets, config keys.

Fast (no workflow): it reads ``README.md`` and ``docs/*.md`` as text and checks each name
against the repository and ``convscope/config/schema.yaml``, so a module that moved or a
config key that was renamed is caught where a reader would meet it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KEY_DOCS = [REPO / "README.md", REPO / "docs" / "usage.md"]

#: repository folders whose files the docs name by path (``results/`` is made by a run);
#: outside ``convscope/`` only source and doc files count (``benchmarks/<rule>.tsv`` in a
#: listing of ``results/`` is a result, not the repository's ``benchmarks/``)
SOURCE_SUFFIXES = (".py", ".smk", ".md", ".yaml", ".yml", ".sh", ".rst")
REPO_FOLDERS = ("convscope", "tests", "rules", "scripts", "benchmarks", "profiles", "docs", ".ci")
FILE_PATH = re.compile(r"(?<![\w/.<{-])((?:%s)/[\w/.*<>{}-]*[\w*>}])"
                       % "|".join(re.escape(folder) for folder in REPO_FOLDERS))
DOTTED_MODULE = re.compile(r"(?<![\w.])(convscope(?:\.\w+)+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CITED_SECTION = re.compile(r"docs/design\.md,?\s+[\"']([^\"'\n]+)[\"']")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
DOTTED_KEY = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*){1,2}")


def _ids(paths):
    return [str(p.relative_to(REPO)) for p in paths]


def _path_exists(path: str) -> bool:
    """A repository path exists; a pattern (``*``, ``<name>``, ``{a,b}``) matches a file."""
    if not re.search(r"[*<{]", path):
        return (REPO / path).exists()
    pattern = re.sub(r"<[^>]*>|\{[^}]*\}", "*", path)
    return any(REPO.glob(pattern))


def _module_exists(parts: list[str]) -> bool:
    path = REPO.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _public_names(parts: list[str]) -> set[str]:
    """Names defined or imported at the top level of a module (for ``convscope.x.y.name``)."""
    path = REPO.joinpath(*parts)
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    text = source.read_text()
    return set(re.findall(r"^(?:def|class|async def)\s+(\w+)", text, re.M)) \
        | set(re.findall(r"^(\w+)\s*[:=]", text, re.M)) \
        | set(re.findall(r"\bimport\s+[^\n]*?\b(\w+)\s*(?:,|$|\))", text, re.M)) \
        | set(re.findall(r"^\s+(\w+),?\s*$", text, re.M)) \
        | set(re.findall(r"[\"'](\w+)[\"']", text))


def dotted_module_problem(name: str) -> str | None:
    """None when ``convscope.a.b[.attr]`` names a module (or a name defined in one)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if _module_exists(parts[:end]):
            rest = parts[end:]
            if not rest or rest[0] in _public_names(parts[:end]):
                return None
            return f"{name}: {'.'.join(parts[:end])} has no {rest[0]!r}"
    return f"{name}: no such module"


def schema_keys(schema: dict, prefix: str = "") -> set[str]:
    """Every dotted key of the schema (``units``, ``units.top_k``, ...)."""
    keys = set()
    for key, sub in schema.get("properties", {}).items():
        keys.add(prefix + key)
        keys |= schema_keys(sub, f"{prefix}{key}.")
    return keys


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_named_module_files_exist(doc):
    missing = sorted({path for path in FILE_PATH.findall(doc.read_text())
                      if (path.startswith("convscope/") or path.endswith(SOURCE_SUFFIXES))
                      and not _path_exists(path)})
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_named_dotted_modules_exist(doc):
    problems = sorted({problem for name in DOTTED_MODULE.findall(doc.read_text())
                       if (problem := dotted_module_problem(name))})
    assert not problems, f"{doc.name} names modules that do not exist: {problems}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if path and not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, f"{doc.name} links to files that do not exist: {broken}"


@pytest.mark.parametrize("doc", KEY_DOCS, ids=_ids(KEY_DOCS))
def test_dotted_config_keys_exist(doc):
    schema = yaml.safe_load((REPO / "convscope" / "config" / "schema.yaml").read_text())
    sections = set(schema["properties"])
    keys = schema_keys(schema)
    unknown = sorted({span for span in CODE_SPAN.findall(doc.read_text())
                      if DOTTED_KEY.fullmatch(span) and span.split(".")[0] in sections
                      and span not in keys})
    assert not unknown, f"{doc.name} names config keys the schema lacks: {unknown}"


def test_cited_design_sections_exist():
    """``docs/design.md, "Stage summaries"`` in code or docs names a heading of design.md."""
    headings = re.findall(r"^#+ (.+)$", (REPO / "docs" / "design.md").read_text(), re.M)
    files = [*DOCS, *(REPO / "convscope").rglob("*.py"), *(REPO / "rules").glob("*.smk")]
    cited = {(str(path.relative_to(REPO)), title) for path in files
             for title in CITED_SECTION.findall(path.read_text())}
    missing = sorted((where, title) for where, title in cited
                     if not any(title.lower() in heading.lower() for heading in headings))
    assert not missing, f"sections of docs/design.md cited but not there: {missing}"


def design_table_modules(text: str) -> list[str]:
    """The files and folders the first column of design.md's module table names, as paths
    under ``convscope/``: a bare name is in the folder of the row's first path
    (``store/h5.py``, ``summary.py`` -> ``store/h5.py``, ``store/summary.py``)."""
    section = text.split("### Modules", 1)[1].split("\n## ", 1)[0]
    names = []
    for row in re.findall(r"^\| (`[^|]*) \|", section, re.M):
        folder = ""
        for name in CODE_SPAN.findall(row):
            if "/" in name.rstrip("/"):
                folder = name.rsplit("/", 1)[0] + "/"
                names.append(name)
            else:
                names.append(folder + name)
    return names


def test_design_module_table_names_existing_modules():
    names = design_table_modules((REPO / "docs" / "design.md").read_text())
    assert len(names) > 60
    missing = [name for name in names if not (REPO / "convscope" / name).exists()]
    assert not missing, f"docs/design.md's module table names modules that do not exist: {missing}"


def test_design_module_table_covers_every_subpackage():
    names = design_table_modules((REPO / "docs" / "design.md").read_text())
    covered = {name.split("/")[0] for name in names}
    subpackages = {path.parent.name for path in (REPO / "convscope").glob("*/__init__.py")}
    assert subpackages <= covered, f"design.md's module table lacks {subpackages - covered}"


def test_checks_catch_what_they_should():
    assert dotted_module_problem("convscope.store.summary.write_summary") is None
    assert dotted_module_problem("convscope.config.preflight") is not None
    assert dotted_module_problem("convscope.store.summary.no_such_name") is not None
    assert {"units.top_k", "synthesis.dream.learning_rate"} <= schema_keys(
        yaml.safe_load((REPO / "convscope" / "config" / "schema.yaml").read_text()))
    assert "units.topk" not in schema_keys(
        yaml.safe_load((REPO / "convscope" / "config" / "schema.yaml").read_text()))
    assert FILE_PATH.findall("see convscope/store/h5.py and (convscope/data/)") == [
        "convscope/store/h5.py", "convscope/data"]
    assert FILE_PATH.findall("`rules/<rule>.smk`, results/x.csv") == ["rules/<rule>.smk"]
    assert design_table_modules("### Modules\n| `store/h5.py`, `summary.py` | x |\n"
                                "| `extract/` | y |\n## Next") == [
        "store/h5.py", "store/summary.py", "extract/"]
    assert _path_exists("rules/<rule>.smk") and not _path_exists("convscope/config/preflight.py")
