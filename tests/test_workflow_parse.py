"""Parsing the workflow imports neither torch nor captum.

Every `snakemake -n`, cluster submission and job start parses the Snakefile and
rules/*.smk; what they import from convscope must stay light (torch and captum
take seconds to import and are only needed inside jobs).
"""

import ast
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO, TINY_CONFIG

HEAVY = ("torch", "captum")
# An import statement of convscope in a .smk file (parenthesised names may span lines).
_IMPORT = re.compile(r"^[ \t]*(from[ \t]+convscope[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*)"
                     r"|import[ \t]+convscope[^\n]*)", re.MULTILINE)


def workflow_imports() -> list[str]:
    """``module`` or ``module:name`` for each convscope import of the Snakefile and rules."""
    imports = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for statement in _IMPORT.findall(path.read_text()):
            node = ast.parse(statement.split("#")[0].strip()).body[0]
            if isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
            else:
                imports.update(f"{node.module}:{alias.name}" for alias in node.names)
    return sorted(imports)


def test_workflow_imports_are_found():
    imports = workflow_imports()
    assert "convscope.config.validate:validate_config" in imports
    assert "convscope.explain.columns:stage_columns" in imports


def test_workflow_helpers_import_neither_torch_nor_captum():
    imports = workflow_imports()
    # `from a import b` where b is a module imports a.b; otherwise the name must exist.
    code = ("import importlib, json, sys\n"
            f"for spec in {imports!r}:\n"
            "    module, _, name = spec.partition(':')\n"
            "    value = importlib.import_module(module)\n"
            "    if name and not hasattr(value, name):\n"
            "        importlib.import_module(f'{module}.{name}')\n"
            f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert json.loads(result.stdout.splitlines()[-1]) == {name: False for name in HEAVY}, imports


@pytest.mark.workflow
def test_dry_run_imports_neither_torch_nor_captum(tmp_path):
    command = [sys.executable, "-X", "importtime", "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--configfile", str(TINY_CONFIG), "--cores", "1", "-n"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert "convscope.config.validate" in imported  # the log covers the workflow's imports
    heavy = [name for name in imported if name.split(".")[0] in HEAVY]
    assert not heavy, f"snakemake -n imported {heavy[:10]}"
