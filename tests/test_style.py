"""House style, checked like any other behaviour: ruff clean, formatted, and no long function without a reason."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUFF = shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is in requirements-dev.txt")
@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command: list[str]):
    proc = subprocess.run([RUFF, *command], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_long_functions_say_why():
    """A function of the package over 60 lines carries a comment above it starting with "# Over 60 lines:"."""
    unexplained = []
    for path in sorted((REPO / "tuneavideo").rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if not lines[first - 2].strip().startswith("# Over 60 lines:"):
                    unexplained.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not unexplained, unexplained
