"""The per-request CPU benchmark still runs end to end against this checkout (a smoke run,
not a measurement): every endpoint measured, every status checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = {
    "healthz": 200,
    "bare": 200,
    "bare_redis": 200,
    "heartbeat": 200,
    "tasks": 200,
    "tasks_empty": 200,
    "send": 202,
    "status": 200,
}


def test_request_cpu_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "request-cpu.json"
    result = subprocess.run(
        [sys.executable, "bench/request_cpu.py", "--rounds", "1", "--seconds", "0.2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every status checked" in result.stdout
    figures = json.loads(out.read_text())
    assert Path(figures["api_file"]).resolve().is_relative_to(ROOT)
    assert figures["settings"]["background_in_workers"] is False
    assert figures["rounds"] == 1
    assert {name: e["expected_status"] for name, e in figures["endpoints"].items()} == ENDPOINTS
    for name, endpoint in figures["endpoints"].items():
        median = endpoint["median"]
        assert median["cpu_us_mean"] > 0 and median["wall_us_mean"] > 0 and median["requests_per_second"] > 0, name
        assert endpoint["cpu_x_baseline"] > 0, name
        # Every measured request (warm-up and rounds) had its status checked.
        measured = endpoint["warmup"]["requests"] + sum(r["requests"] for r in endpoint["rounds"])
        assert endpoint["statuses_verified"] == measured > 0, name
    assert figures["endpoints"]["tasks"]["messages_per_claim"] == 10
    assert figures["endpoints"]["tasks_empty"]["messages_per_claim"] == 0
    # The baselines never reach Redis but for the bare GET's one no-op script (nor does
    # anything else: no background jobs); the others do.
    trips = {name: e["median"]["redis_round_trips_per_request"] for name, e in figures["endpoints"].items()}
    assert trips["healthz"] == trips["bare"] == 0 and trips["bare_redis"] == 1, trips
    assert min(trips["heartbeat"], trips["tasks"], trips["tasks_empty"], trips["send"]) >= 1, trips
    assert figures["served"] is False
    assert figures["endpoints"]["bare_redis"]["bare_redis_share"] == 1
    assert all(e["bare_redis_share"] > 0 for e in figures["endpoints"].values())


def test_request_cpu_served_and_chosen_endpoints(tmp_path: Path) -> None:
    """``--served`` measures the app inside the request id, access log and metrics wrapper
    (its log lines kept off the terminal); ``--endpoints`` picks some, and the no-op
    baseline comes along."""
    out = tmp_path / "request-cpu.json"
    command = [sys.executable, "bench/request_cpu.py", "--rounds", "1", "--seconds", "0.2", "--json", str(out)]
    command += ["--served", "--endpoints", "heartbeat,tasks_empty"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"logger":"connecfy.access"' not in result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert figures["served"] is True
    assert set(figures["endpoints"]) == {"healthz", "heartbeat", "tasks_empty"}
    assert all(e["bare_redis_share"] is None for e in figures["endpoints"].values())
