"""The load bench's long-polling fleet, tiny, against real servers the bench starts:
``poll-vs-long-poll`` with 20 phones in two generator processes, 8 s of load each way
at time scale 0.1 (polls every 2 s, long polls of 3 s). It checks the bench's
bookkeeping, never the speed: every message claimed exactly once; the long-polling
phones asking far less often than the polling ones; every phone on an address of its
own, as the server saw it (its access log); the generators' records merged (each
process's phones, lag and connections reported)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PHONES = 20


def test_long_polls_against_polling_each_phone_on_its_own_address(tmp_path: Path) -> None:
    out, log = tmp_path / "result.json", tmp_path / "server.log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "poll-vs-long-poll",
            "--phones",
            str(PHONES),
            "--pool-phones",
            "4",
            "--rate",
            "2",
            "--seconds",
            "8",
            "--time-scale",
            "0.1",
            "--batch-size",
            "5",
            "--generator-processes",
            "2",
            "--no-baselines",
            "--quiet",
            "--server-log",
            str(log),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    figures = json.loads(out.read_text())
    [polling], [long] = figures["runs"]["polling"], figures["runs"]["long polls"]
    assert (polling["long_poll"], long["long_poll"]) == (False, True)

    for run in (polling, long):
        invariants = run["invariants"]
        assert invariants["ok"], invariants
        assert invariants["accepted"] >= 10, invariants
        assert invariants["claimed_twice"] == invariants["lost"] == invariants["unknown_claims"] == 0
        claimed = run["window"]["claimed_after_202"]
        assert sum(q["count"] for q in claimed.values()) == invariants["accepted"], claimed
        assert set(claimed) <= {"device queue", "own pool", "platform pool"}
        generators = run["window"]["generators"]
        assert [g["phones"] for g in generators["by_process"]] == [PHONES // 2, PHONES // 2]
        assert all(g["loop_lag_ms"]["samples"] > 0 and g["connections_max"] > 0 for g in generators["by_process"])
        assert generators["source_addresses"] == PHONES
        assert run["window"]["server"]["kinds"]["status"]["count"] > 0
        # The causes of a whole-system spike to rule in or out: the collector's pauses
        # (the background process keeps Python's thresholds, so it collects within seconds)
        # and the private Redis's latency monitor, read.
        assert any(key.startswith("background ") for key in run["window"]["server"]["gc"]), run["window"]["server"]
        assert isinstance(run["window"]["redis_latency_events"], dict)
        memory = run["window"]["memory"]
        assert memory["start"]["server_rss_bytes"] > 0 and memory["end"]["redis_used_memory"] > 0

    rows = {kind: row for kind, row in long["window"]["client"].items()}
    assert rows["long poll"]["count"] > 0 and "poll" not in rows
    assert "poll" in polling["window"]["client"] and "long poll" not in polling["window"]["client"]
    assert long["window"]["server"]["kinds"]["long poll"]["count"] > 0

    # Polls and heartbeats per phone and minute (status reports follow the messages alike):
    # about 70 polling (a poll every 2 s, a heartbeat every 1.5 s) against about 28 long
    # polling (a long poll every 3 s or after each message, a heartbeat every 30 s). The
    # bound leaves room for a busy machine's stalls within a window of a few seconds.
    def asking(run: dict) -> float:
        per_phone = run["window"]["requests_per_phone_minute"]
        return per_phone["poll"] + per_phone["long poll"] + per_phone["heartbeat"]

    assert asking(long) < 0.6 * asking(polling), (asking(long), asking(polling))

    # Heartbeats, counted: a long-polling phone beats every 27-33 s (30 s ± 10 %) from a
    # random phase, so at most once in a window of a few seconds, however the phases fall;
    # a polling phone beats every 1.35-1.65 s, so 3 times or more in a window of 5 s or more
    # (the bound below asks for 2, room for a stalled machine).
    def heartbeats(run: dict) -> int:
        return run["window"]["client"].get("heartbeat", {}).get("count", 0)

    assert polling["window"]["seconds_counted"] >= 5 and long["window"]["seconds_counted"] < 27
    assert heartbeats(long) <= PHONES < 2 * PHONES <= heartbeats(polling), (heartbeats(long), heartbeats(polling))

    # The server saw each phone from one address of its own, and the senders apart.
    for mode in ("poll", "long-poll"):
        by_device: dict[str, set[str]] = defaultdict(set)
        senders: set[str] = set()
        for line in (tmp_path / f"server-{mode}-1.log").read_text().splitlines():
            if '"connecfy.access"' not in line:
                continue
            entry = json.loads(line)
            parts = entry["path"].split("?")[0].split("/")  # /api/devices/<id>/tasks/
            if entry["path"].startswith("/api/devices/") and parts[4:5] in (["tasks"], ["heartbeat"]):
                by_device[parts[3]].add(entry["client"])
            elif entry["path"].startswith("/api/external/"):
                senders.add(entry["client"])
        assert len(by_device) == PHONES, mode
        assert all(len(addresses) == 1 for addresses in by_device.values()), by_device
        addresses = {next(iter(a)) for a in by_device.values()}
        assert len(addresses) == PHONES
        assert all(ipaddress.ip_address(a) in ipaddress.ip_network("127.1.0.0/16") for a in addresses)
        assert senders == {"127.0.0.1"}
