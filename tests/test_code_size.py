"""Files a reader can hold in their head: no module over 500 lines, no function over 60."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "convscope"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _offenders(package: Path = PACKAGE) -> list[str]:
    """Every module over `MAX_MODULE_LINES` lines and every function or method over
    `MAX_FUNCTION_LINES` lines (decorators included) under ``package``, as text."""
    found = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(package.parent).as_posix()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno} {node.name}(): {length} lines "
                                 f"(at most {MAX_FUNCTION_LINES})")
    return found


def test_the_package_is_found():
    assert (PACKAGE / "__init__.py").is_file()
    assert len(list(PACKAGE.rglob("*.py"))) > 50


def test_no_module_or_function_too_long():
    offenders = _offenders()
    assert not offenders, "split these by what they do:\n" + "\n".join(offenders)


def test_the_limits_are_measured_as_written(tmp_path):
    """A 62-line decorated function in a 501-line module is reported; 60 and 500 lines are not."""
    package = tmp_path / "convscope"
    package.mkdir()
    (package / "__init__.py").write_text("")
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    (package / "ok.py").write_text("def fits():\n" + body + "\n" * 440)  # 60 + 440 lines
    (package / "long.py").write_text("@staticmethod\ndef too_long():\n" + body + "    return 1\n"
                                     + "\n" * 439)  # 62 + 439 lines
    assert _offenders(package) == ["convscope/long.py: 501 lines (at most 500)",
                                   "convscope/long.py:2 too_long(): 62 lines (at most 60)"]
