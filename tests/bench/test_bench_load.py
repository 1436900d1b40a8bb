"""Smoke runs of every load scenario in bench/load: small swarms for a few seconds
against a real ``connecfy serve`` the bench starts itself, over real HTTP. They assert
the invariants (every accepted message claimed by one phone and finished, nothing lost
or duplicated) and the shape of the report, never the speed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "--phones",
    "12",
    "--pool-phones",
    "3",
    "--rate",
    "20",
    "--seconds",
    "5",
    "--time-scale",
    "0.1",
    "--batch-size",
    "10",
    "--quiet",
]


def bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.load", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result, json.loads(out.read_text())


def assert_invariants(figures: dict, at_least: int) -> None:
    invariants = figures["invariants"]
    assert invariants["ok"], invariants
    assert invariants["accepted"] >= at_least, invariants
    assert invariants["lost"] == invariants["claimed_twice"] == invariants["status_mismatch"] == 0
    assert set(invariants["final_states"]) <= {"sent", "delivered", "failed"}, invariants
    rows = {row["name"]: row for row in figures["requests"] + figures["end_to_end"]}
    assert rows["poll"]["count"] > 0 and rows["heartbeat"]["count"] > 0 and rows["status"]["count"] > 0
    assert rows["202 → claimed"]["count"] == invariants["accepted"]


def test_steady_with_baselines_table_json_and_plot(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (apt-get install wrk): the baselines need it")
    png = tmp_path / "plot.png"
    result, figures = bench(tmp_path, "steady", *SMALL, "--baseline-seconds", "1", "--png", str(png))
    assert_invariants(figures, at_least=60)
    assert figures["baselines"]["bare"]["requests_per_second"] > 0
    assert figures["baselines"]["noop_evalsha_per_second"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "invariants OK" in result.stdout and "bare Litestar GET" in result.stdout
    # Every send path was used: session and external sends, and batches.
    rows = {row["name"]: row for row in figures["requests"]}
    assert rows["send"]["count"] > 0 and rows["batch"]["count"] > 0
    assert figures["server"]["cpu_percent"] is not None and figures["server"]["redis_used_memory_max"] > 0


def test_burst(tmp_path: Path) -> None:
    _, figures = bench(tmp_path, "burst", *SMALL, "--burst-seconds", "2", "--no-baselines")
    assert_invariants(figures, at_least=200)  # 20/s for 3 s and 200/s for 2 s
    assert set(figures["marks"]) == {"burst starts", "burst ends"}


def test_churn(tmp_path: Path) -> None:
    _, figures = bench(tmp_path, "churn", *SMALL, "--churn-share", "0.5", "--no-baselines")
    assert_invariants(figures, at_least=60)


def test_pool_fairness_reports_each_small_senders_wait(tmp_path: Path) -> None:
    _, figures = bench(
        tmp_path,
        "pool-fairness",
        *SMALL,
        "--backlog",
        "100",
        "--small-senders",
        "3",
        "--small-rate",
        "1",
        "--pool-budget",
        "300",
        "--no-baselines",
    )
    assert_invariants(figures, at_least=150)
    waits = figures["scenario_figures"]["wait_202_to_claimed_s"]
    assert set(waits) == {"huge", "small-1", "small-2", "small-3"}
    assert all(w["count"] >= 2 for w in waits.values()), waits


def test_redis_restart(tmp_path: Path) -> None:
    _, figures = bench(tmp_path, "redis-restart", *SMALL, "--no-baselines")
    assert_invariants(figures, at_least=60)
    restart = figures["scenario_figures"]["redis_restart"]
    assert restart["restarted_at_s"] > 0 and restart["recovered_after_s"] < 10, restart


def test_steady_on_a_redis_cluster_with_the_pool_in_four_shards(tmp_path: Path) -> None:
    """``--redis cluster``: the bench starts three primaries, the server gets their
    REDIS_URL, and the report has each node's CPU and slots."""
    result, figures = bench(
        tmp_path, "steady", *SMALL, "--redis", "cluster", "--server-setting", "CONNECFY_POOL_SHARDS=4", "--no-baselines"
    )
    assert_invariants(figures, at_least=60)
    redis = figures["redis"]
    assert redis["kind"] == "cluster" and figures["redis_kind"] == "cluster"
    assert sorted(redis["slots_by_node"].values()) == ["0-5460", "10923-16383", "5461-10922"]
    assert set(redis["cpu_percent_by_node"]) == set(redis["slots_by_node"])
    assert figures["server"]["redis_used_memory_max"] > 0
    assert "Redis (cluster) CPU during load" in result.stdout


def test_cluster_bench_drains_the_pool_exactly_once_in_each_configuration(tmp_path: Path) -> None:
    """``bench/cluster_bench.py``'s pool part, tiny: one redis-server and a cluster with
    one and four pool shards; every queued message claimed once, the shards' nodes named."""
    out = tmp_path / "cluster.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/cluster_bench.py",
            "--skip-steady",
            "--pool-rounds",
            "1",
            "--senders",
            "4",
            "--pool-phones",
            "4",
            "--backlog",
            "400",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    pool = json.loads(out.read_text())["pool"]
    assert [(r["kind"], r["shards"]) for r in pool["rounds"]] == [("single", 1), ("cluster", 1), ("cluster", 4)]
    assert all(r["queued"] == r["messages"] == 400 and r["lost"] == r["claimed_twice"] == 0 for r in pool["rounds"])
    four = pool["medians"]["cluster, 4 pool shards"]["shards_by_node"]
    assert sorted(tag for tags in four.values() for tag in tags) == [
        "p:default",
        "p:default:1",
        "p:default:2",
        "p:default:3",
    ]
    assert sum(1 for tags in four.values() if tags) == 3  # every primary holds a shard
    assert "busiest node µs/claim" in done.stdout


def test_the_pool_table_prints_a_ratio_whose_base_read_zero_as_n_a() -> None:
    """A short run on one Redis can read 0 µs of Redis CPU: its ratios are None, and the
    table says n/a instead of failing the whole bench."""
    from bench.cluster_bench import print_pool

    keys = [
        "claims_per_second",
        "messages_per_second",
        "claim_p50_ms",
        "claim_p99_ms",
        "cpu_percent_total",
        "client_cpu_percent",
        "redis_cpu_us_per_claim",
        "busiest_node_cpu_us_per_claim",
        "client_cpu_us_per_claim",
        "enqueue_messages_per_second",
    ]
    by_node = {"cpu_percent_by_node": {"single": 0.0}, "evalsha_per_claim_by_node": {"single": 1.0}}
    medians = {
        "single, 1 pool shard": {
            **dict.fromkeys(keys, 1.0),
            "redis_cpu_us_per_claim": 0.0,
            **by_node,
            "script_us_per_claim_by_node": {"single": 0.0},
            "shards_by_node": {"single": ["p:default"]},
        }
    }
    ratios = {"single, 1 pool shard": {**dict.fromkeys(keys, 1.0), "redis_cpu_us_per_claim": None}}
    lines: list[str] = []
    print_pool({"medians": medians, "ratios_to_single": ratios}, lines.append)
    [row] = [line for line in lines if line.startswith("Redis CPU µs/claim")]
    assert "0.0 (n/a×)" in row


def test_capacity_runs_every_endpoint(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (apt-get install wrk)")
    result, figures = bench(
        tmp_path,
        "capacity",
        "--phones",
        "5",
        "--capacity-seconds",
        "1",
        "--baseline-seconds",
        "1",
        "--batch-size",
        "10",
    )
    names = [row["name"] for row in figures["endpoints"]]
    assert names == ["GET /healthz", "POST heartbeat", "GET tasks (empty)", "POST external send", "POST batch of 10"]
    assert all(row["requests_per_second"] > 0 and row["status_errors"] == 0 for row in figures["endpoints"])
    assert "% bare" in result.stdout


def test_the_invariant_check_catches_each_kind_of_breakage() -> None:
    """The checker the smoke runs rely on reports each broken invariant (so their
    "invariants OK" means something)."""
    from bench.load.ledger import Ledger

    ledger = Ledger()
    for n in range(5):
        ledger.accept(f"m{n}", "own", 0.0, 0.1)
    ledger.claim("m0", "phone-a", 1.0)
    ledger.reported("m0", "sent", 1.5)
    assert ledger.check({"m0": "sent"})["lost"] == 4  # m1..m4 never claimed

    for n in range(1, 5):
        ledger.claim(f"m{n}", "phone-a", 1.0)
        ledger.reported(f"m{n}", "sent", 1.5)
    healthy = {f"m{n}": "sent" for n in range(5)}
    assert ledger.check(healthy)["ok"]

    assert not ledger.claim("m1", "phone-a", 2.0)  # same phone again: a redelivery
    assert ledger.check(healthy)["ok"] and ledger.redeliveries == 1
    ledger.claim("m1", "phone-b", 2.0)  # another phone: a duplicate
    assert ledger.check(healthy)["claimed_twice"] == 1
    ledger.claims["m1"].discard("phone-b")

    assert ledger.check({**healthy, "m2": "failed"})["status_mismatch"] == 1
    assert ledger.check({**healthy, "m3": "queued"})["lost"] == 1
    assert ledger.check({**healthy, "stray": "claimed"})["not_final_on_server"] == 1
    ledger.claim("ghost", "phone-a", 3.0)  # an id nobody was told about
    assert ledger.check(healthy)["unknown_claims"] == 1
    assert ledger.check({**healthy, "ghost": "sent"})["ok"] is True


async def test_the_lean_client_reuses_connections_and_reports_drops() -> None:
    """The swarm's HTTP/1.1 client against a bare asyncio server: keep-alive answers
    reuse one connection, ``Connection: close`` is honoured, a request the server drops
    on a kept-alive connection is sent once more on a new one (as HTTP clients do with a
    connection the server let go), a dropped connection is then an error the caller sees
    (recorded as "no answer"), never a hang; a pool with a source address connects from
    it, and the process's open connections are counted."""
    import asyncio

    from bench.load.http1 import Connections, Http1Pool

    connections = 0
    peers: list[str] = []
    dropped: set[bytes] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        peers.append(writer.get_extra_info("peername")[0])
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            body = await reader.readexactly(length)
            path = head.split(b" ")[1]
            if path == b"/drop" or (path == b"/drop-once" and path not in dropped):
                dropped.add(path)
                writer.close()
                return
            close = path == b"/close"
            answer = b'{"echo": %d}' % len(body)
            writer.write(
                b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: %d\r\n%s\r\n%s"
                % (len(answer), b"Connection: close\r\n" if close else b"", answer)
            )
            await writer.drain()
            if close:
                writer.close()
                return

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool(f"http://127.0.0.1:{port}", size=4, timeout=5)
    phone = Http1Pool(f"http://127.0.0.1:{port}", size=2, timeout=5, local_address="127.1.2.3")
    open_before = Connections.open
    try:
        for n in range(5):
            status, raw, headers = await pool.request("POST", "/x", body=b"a" * n, params={"limit": "3"})
            assert (status, raw, headers) == (429, b'{"echo": %d}' % n, {"Retry-After": "7"})
        assert connections == 1 and Connections.open == open_before + 1
        assert (await pool.request("GET", "/close"))[0] == 429
        assert (await pool.request("GET", "/again"))[0] == 429 and connections == 2
        # Dropped on the kept-alive connection: sent again on a new one, and answered there.
        assert (await pool.request("GET", "/drop-once"))[0] == 429 and connections == 3
        # Dropped on the kept-alive one and on the new one: the caller sees it.
        with pytest.raises(ConnectionError):
            await pool.request("GET", "/drop")
        assert connections == 4
        assert (await pool.request("GET", "/after"))[0] == 429 and connections == 5
        assert (await phone.request("GET", "/from-a-phone"))[0] == 429
        assert peers[-1] == "127.1.2.3" and set(peers[:-1]) == {"127.0.0.1"}
    finally:
        await pool.close()
        await phone.close()
        server.close()
