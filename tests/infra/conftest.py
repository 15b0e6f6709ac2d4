"""Infra checks' fixtures: the infra tools' own venv (.venv-infra, `make infra-tools`) and every .bicep file parsed by pycep."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
INFRA_PYTHON = REPO / ".venv-infra" / "bin" / "python"
CHECKOV = REPO / ".venv-infra" / "bin" / "checkov"

PARSE_ALL = """
import json, sys
from pathlib import Path
from pycep import BicepParser
parser = BicepParser()
out, errors = {}, {}
for path in sorted(Path(sys.argv[1]).glob('*.bicep')):
    try:
        out[path.name] = parser.parse(file_path=path)
    except Exception as exc:
        errors[path.name] = f'{type(exc).__name__}: {exc}'
print(json.dumps({'parsed': out, 'errors': errors}, default=str))
"""


def infra_tools() -> Path:
    """The infra venv's python; CI (CI=true) fails without it, a developer's partial run skips with what to do."""
    if not INFRA_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(".venv-infra is missing: `make test` installs it (make infra-tools)")
        pytest.skip("infra tools not installed: run `make infra-tools` (make test does)")
    return INFRA_PYTHON


def parse_bicep(directory: Path) -> dict[str, Any]:
    result = subprocess.run([str(infra_tools()), "-c", PARSE_ALL, str(directory)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def bicep() -> dict[str, Any]:
    """{file name: pycep JSON} for every infra/*.bicep (the parse itself is asserted in test_bicep.py)."""
    parsed = parse_bicep(INFRA)
    assert not parsed["errors"], parsed["errors"]
    return parsed["parsed"]
