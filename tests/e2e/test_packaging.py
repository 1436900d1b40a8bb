"""The built wheel carries the Lua scripts, and the installed package finds them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.e2e_server import CONNECFY, server_env

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_every_script_and_the_broker_loads_them_from_it(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    [wheel] = (tmp_path / "dist").glob("connecfy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in (ROOT / "lua").rglob("*.lua"):
        assert f"broker/lua/{script.relative_to(ROOT / 'lua')}" in names
    assert any(n.endswith("entry_points.txt") for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    probe = "import broker.scripts as s; d = s.lua_directory(); print(d); print(len(s.ScriptRegistry().scripts))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    ).stdout.split()
    assert out[0] == str(target / "broker" / "lua")
    assert int(out[1]) == len(list((ROOT / "lua").glob("*.lua")))


def test_connecfy_version_and_selfcheck() -> None:
    connecfy = Path(sys.executable).parent / "connecfy"  # the console script pip installed
    version = subprocess.run([str(connecfy), "--version"], check=True, capture_output=True, text=True).stdout
    assert version.strip() == "connecfy 0.1.0"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out = subprocess.run(
        [str(connecfy), "selfcheck"], check=True, capture_output=True, text=True, env=env, timeout=60
    ).stdout
    assert "queued -> claimed -> sent" in out and out.strip().endswith("selfcheck passed")


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [str(CONNECFY), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=60,
        )
    assert result.returncode == 1, result
    assert result.stderr.strip() == f"connecfy: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "redis").exists(), "nothing starts before the port is known to be free"
