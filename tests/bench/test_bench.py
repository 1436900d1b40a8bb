"""The broker benchmark still runs end to end (a smoke run, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_broker_bench_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "bench/broker_bench.py", "--seconds", "0.2", "--rounds", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no-op" in result.stdout and "claim" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["rounds"] == 1 and figures["cpu_count"] >= 1


def test_wait_bench_smoke_run(tmp_path: Path) -> None:
    """The WAIT 1 / WAIT 0 bench on its private primary and replica: every waited send
    ran one WAIT, and none at 0 (the bench checks each round)."""
    out = tmp_path / "wait.json"
    short = ["--seconds", "0.2", "--rounds", "1", "--concurrency", "2"]
    result = subprocess.run(
        [sys.executable, "bench/wait_bench.py", *short, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [cell] = json.loads(out.read_text())["cells"]
    assert (cell["target"], cell["concurrency"]) == ("replica", 2)
    for wait in (0, 1):
        [measured] = cell[f"wait_{wait}"]["rounds"]
        assert measured["calls"] > 0 and measured["waits_on_server"] == (measured["calls"] if wait else 0)
