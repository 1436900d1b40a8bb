"""Imports point one way: the program (``connecfy``) → the HTTP layer (``api``) → the
broker (``broker``). Read from the source with ``ast``, so an import inside a function
counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("connecfy", "api", "broker")  # each may import only those after it
FORBIDDEN = {layer: set(LAYERS[: LAYERS.index(layer) + 1]) - {layer} for layer in LAYERS}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports (absolute imports; ours use no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def layer_violations(package: str) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imported_packages(path) & FORBIDDEN[package]
    )


@pytest.mark.parametrize("package", LAYERS)
def test_imports_point_one_way(package: str) -> None:
    assert layer_violations(package) == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from api.auth import hash_password\n\nimport connecfy.cli\nfrom . import x\n")
    assert imported_packages(module) == {"api", "connecfy"}
    assert {"connecfy": set(), "api": {"connecfy"}, "broker": {"connecfy", "api"}} == FORBIDDEN


def redis_reaches(path: Path) -> list[str]:
    """Where a module imports redis-py or reads an attribute named ``redis`` (the broker's client)."""
    tree = ast.parse(path.read_text(), str(path))
    found = [f"imports {name}" for name in sorted(imported_packages(path) & {"redis"})]
    found += [
        f"line {node.lineno}: .redis"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "redis"
    ]
    return found


def test_nothing_outside_broker_reaches_redis() -> None:
    """Only ``broker/`` talks to Redis: no module of the HTTP layer or the program imports
    redis-py or reaches for the broker's client (a client is made by ``broker.redis_client``)."""
    offenders = {
        str(path.relative_to(ROOT)): found
        for package in ("api", "connecfy")
        for path in (ROOT / package).rglob("*.py")
        if (found := redis_reaches(path))
    }
    assert offenders == {}


def test_the_redis_check_sees_a_reach(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from broker.redis_client import text\n\nasync def f(broker):\n    await broker.redis.ping()\n")
    assert redis_reaches(module) == ["line 4: .redis"]
    module.write_text("import redis.asyncio\n")
    assert redis_reaches(module) == ["imports redis"]
