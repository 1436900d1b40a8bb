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
