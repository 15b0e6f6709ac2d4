"""The emulator's layout stays changeable: short functions, a docstring per module, handlers importable from route tables."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

EMULATOR = Path(__file__).resolve().parents[2] / "emulator"
MAX_FUNCTION_LINES = 80
SUB1 = "00000000-0000-4000-8000-00000000f001"


def long_functions(root: Path, limit: int) -> list[str]:
    """`path:line name (N lines)` for every function or method under `root` longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_emulator_function_is_longer_than_80_lines() -> None:
    assert long_functions(EMULATOR, MAX_FUNCTION_LINES) == []


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    (pkg / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(pkg, MAX_FUNCTION_LINES) == ["pkg/m.py:5 long (91 lines)"]


def test_every_emulator_module_says_what_it_owns_first() -> None:
    missing = [str(p) for p in EMULATOR.rglob("*.py") if p.stat().st_size and ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


@pytest.mark.parametrize("family", ["arm", "acr"])
def test_every_route_names_a_module_level_handler(family: str) -> None:
    if family == "arm":
        from emulator.services.arm import ROUTES

        handlers = [h for route in ROUTES for h in route.handlers.values()]
    else:
        from emulator.services.acr import HANDLERS

        handlers = list(HANDLERS.values())
    for handler in handlers:
        module = inspect.getmodule(handler)
        assert module is not None and getattr(module, handler.__name__) is handler, handler
        assert module.__name__.startswith(f"emulator.services.{family}."), handler


def test_arm_route_table_matches_paths_case_insensitively() -> None:
    from emulator.services.arm import routes

    found = routes.match("PUT", "/subscriptions/S/resourcegroups/RG/providers/microsoft.containerservice/MANAGEDCLUSTERS/c/agentpools/p1/")
    assert found is not None
    handler, params = found
    assert handler.__name__ == "put_pool" and params == {"sub": "S", "rg": "RG", "name": "c", "pool_name": "p1"}
    assert routes.match("GET", "/subscriptions/S/providers/Microsoft.Nope/things") is None
    with pytest.raises(routes.ArmFailure) as refused:
        routes.match("DELETE", "/subscriptions/S")
    assert refused.value.status == 405


def test_an_arm_handler_runs_alone_without_a_server(tmp_path: Path) -> None:
    """A handler is a plain function of (ArmRequest, path parameters): build the request, call it, read the answer."""
    import json

    from aiohttp.test_utils import make_mocked_request

    from emulator.faults import FaultPlan
    from emulator.scenario import load_scenario
    from emulator.services.arm import ArmRequest, resources
    from emulator.tokens import TokenAuthority
    from emulator.web import Context

    world, _rules, _seed = load_scenario({"subscriptions": [{"id": SUB1, "registries": [{"name": "onlyreg"}],
                                                             "clusters": [{"name": "c1", "pools": [{"name": "p1"}]}]}]})
    ctx = Context(world=world, faults=FaultPlan(), tokens=TokenAuthority(world.tenant_id), identity_header="x", state_dir=tmp_path,
                  management_url="https://127.0.0.1:1")
    request = make_mocked_request("GET", f"/subscriptions/{SUB1}/resources?api-version=2024-11-01"
                                         "&$filter=resourceType%20eq%20%27Microsoft.ContainerRegistry/registries%27")
    req = ArmRequest(ctx, request, ["subscriptions", SUB1, "resources"], ["subscriptions", SUB1, "resources"], "2024-11-01", {})
    answer = resources.list_resources(req, sub=SUB1)
    assert answer.status == 200
    assert [r["name"] for r in json.loads(answer.body)["value"]] == ["onlyreg"]
