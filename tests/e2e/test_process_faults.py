"""``connecfy serve`` on a bad day, against the real server: a request worker killed with
SIGKILL (as the out-of-memory killer does) is replaced while the other serves, twice in a
row, and no accepted message is lost or handed out twice; a second ``serve`` on the same
data directory is refused in one line and harms nothing of the first; a ``serve``
killed outright takes its workers and its Redis along, and the next one starts on the
same directory with the data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

from tests.support.e2e_server import CONNECFY, Api, ServerProcess, expect, free_port, server_env
from tests.support.http_world import OPERATOR_PASSWORD, PASSWORD, TO, World
from tests.support.ledger import Ledger, PhoneLoop, drain, try_request

# Room for the traffic below: no rate limit or budget gets in the way, and a claim whose
# answer was lost with a killed worker is handed out again after 3 s, not 120.
ROOMY = {
    "CONNECFY_LEASE_SECONDS": "3",
    "CONNECFY_TASKS_PER_MINUTE": "100000",
    "CONNECFY_TASKS_BURST": "100000",
    "CONNECFY_SENDS_PER_SECOND": "100000",
    "CONNECFY_SENDS_BURST": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_MINUTE": "100000",
    "CONNECFY_DEVICE_SEGMENTS_PER_DAY": "100000",
}
STREAK = 20  # requests in a row that must succeed after a kill ...
STREAK_WITHIN = 15.0  # ... within this many seconds of it
PACE = 0.01  # seconds between rounds of traffic


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def children(server: ServerProcess) -> list[psutil.Process]:
    assert server.process is not None
    return [p for p in psutil.Process(server.process.pid).children() if alive(p)]


def is_redis(process: psutil.Process) -> bool:
    return process.name().startswith("redis-server")


def is_background(process: psutil.Process) -> bool:
    return "background" in process.cmdline()


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    """The granian request workers: the children that are neither Redis nor the background process."""
    return [p for p in children(server) if not is_redis(p) and not is_background(p)]


def others_of(server: ServerProcess) -> set[int]:
    return {p.pid for p in children(server) if is_redis(p) or is_background(p)}


def replacement(server: ServerProcess, before: set[int], timeout: float = 10.0) -> int:
    """The pid of the worker that took a killed one's place: the one not in ``before``
    (every worker's pid before the kill) once there are as many workers again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = {p.pid for p in workers_of(server)}
        if len(now) == len(before) and now - before:
            (new,) = now - before
            return new
        time.sleep(0.01)
    raise AssertionError(f"no worker replaced the killed one within {timeout} s:\n{server.output()[-3000:]}")


def started_at(server: ServerProcess, pid: int, timeout: float = 10.0) -> float:
    """When worker ``pid`` said it was serving (granian's "Started worker" line), as a Unix time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.output().splitlines():
            if f'"pid":{pid}' in line and "Started worker" in line:
                return datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} never said it started:\n{server.output()[-3000:]}")


class Traffic(threading.Thread):
    """Sends with an API key, and the phone's claims and reports, round after round until
    stopped: each request's end time and whether it was answered as it should be."""

    def __init__(self, world: World, key: str, owner: Api, loop: PhoneLoop, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.sender = world.api()
        self.key = key
        self.owner = owner
        self.loop = loop
        self.ledger = ledger
        self.outcomes: list[tuple[float, bool]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            body = {"api_key": self.key, "to": TO, "message": f"fault test {n}"}
            sent = try_request(lambda body=body: self.sender.post("/api/external/send/", json=body))
            self.ledger.sent(sent, self.owner)
            self.outcomes.append((time.monotonic(), sent is not None and sent.status_code == 202))
            for answer in self.loop.step():
                self.outcomes.append((time.monotonic(), answer is not None and answer.status_code in (200, 409)))
            time.sleep(PACE)

    def streak_after(self, since: float) -> tuple[float, int]:
        """Wait for STREAK answers in a row after ``since``: (seconds it took, requests
        that failed before it)."""
        while time.monotonic() < since + STREAK_WITHIN:
            after = [(at, ok) for at, ok in list(self.outcomes) if at > since]
            run = failed = 0
            for at, ok in after:
                run = run + 1 if ok else 0
                failed += not ok
                if run == STREAK:
                    return at - since, failed
            time.sleep(0.05)
        raise AssertionError(f"not {STREAK} requests in a row within {STREAK_WITHIN} s of the kill")


def test_a_killed_worker_is_replaced_while_the_other_serves_and_nothing_is_lost(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, workers=2, settings=ROOMY).start()
    world = World(server)
    ledger = Ledger()
    traffic: Traffic | None = None
    try:
        owner = world.signup()
        phone = world.pair(owner)
        key = world.api_key(owner)["api_key"]
        loop = PhoneLoop(phone, ledger)
        assert len(workers_of(server)) == 2
        others = others_of(server)
        assert len(others) == 2  # the private Redis and the background process
        traffic = Traffic(world, key, owner, loop, ledger)
        traffic.start()
        time.sleep(0.5)

        figures = []
        victim = workers_of(server)[0].pid
        for round_ in ("a worker", "its replacement at once"):
            before = {p.pid for p in workers_of(server)}
            killed_at, killed_at_wall = time.monotonic(), time.time()
            os.kill(victim, signal.SIGKILL)
            new = replacement(server, before)
            took, failed = traffic.streak_after(killed_at)
            serving = started_at(server, new) - killed_at_wall
            assert server.process is not None and server.process.poll() is None, server.output()[-3000:]
            assert others_of(server) == others  # Redis and the background process untouched
            figures.append(
                f"{round_}: replacement serving after {serving:.2f} s, {failed} requests failed, "
                f"{STREAK} in a row after {took:.2f} s"
            )
            # The second kill hits the fresh replacement: granian on its own calls a worker
            # dying again within 5.5 s a crash loop and stops the whole server.
            victim = new
        print("; ".join(figures))

        traffic.halt.set()
        traffic.join(10)
        drain(loop, timeout=15)
        ledger.check()
        assert len(ledger.accepted) > 50, len(ledger.accepted)
        assert "Worker crash loop" not in server.output()
    finally:
        if traffic is not None:
            traffic.halt.set()
            traffic.join(10)
        world.close()
        code = server.stop()
    assert code == 0, server.output()[-3000:]


def test_one_serve_per_data_dir_and_a_killed_one_frees_it_for_the_next(tmp_path: Path) -> None:
    """A second serve on the directory is refused in one line naming it and the first's
    pid, and touches nothing of the first; the first killed outright takes its workers
    and its Redis along, and the next serve starts there with the data."""
    first = ServerProcess(tmp_path, workers=2).start()
    world = World(first)
    ledger = Ledger()
    left: list[psutil.Process] = []
    try:
        owner = world.signup()
        phone = world.pair(owner)
        assert owner.get("/metrics").status_code == 200  # the workers' metric files exist
        socket_path = tmp_path / "redis" / "redis.sock"
        socket_inode = socket_path.stat().st_ino
        metric_files = {p.name for p in (tmp_path / "metrics").glob("*.db")}
        assert metric_files
        others = others_of(first)
        assert first.process is not None

        second = subprocess.run(
            [str(CONNECFY), "serve", "--port", str(free_port()), "--data-dir", str(tmp_path), "--workers", "2"],
            capture_output=True,
            text=True,
            env=server_env(),
            cwd=tmp_path,
            timeout=20,
        )
        assert second.returncode == 1, second
        assert second.stdout == "", second
        (line,) = [line for line in second.stderr.splitlines() if line.strip()]
        assert line.startswith("connecfy: "), line
        assert str(tmp_path.resolve()) in line and f"pid {first.process.pid}" in line, line

        # Nothing of the first was touched: its Redis, its socket, its metrics, its lock.
        assert others_of(first) == others
        assert socket_path.stat().st_ino == socket_inode
        assert {p.name for p in (tmp_path / "metrics").glob("*.db")} >= metric_files
        assert (tmp_path / "serve.lock").read_text().strip() == str(first.process.pid)
        # Its API serves, and its command line reaches its Redis through the socket.
        for n in range(3):
            body = {"to": TO, "message": f"after the second serve {n}", "device_id": phone.device_id}
            ledger.sent(owner.post("/api/sms/send/", json=body), owner)
        drain(PhoneLoop(phone, ledger), timeout=10)
        ledger.check()
        assert "created" in first.create_operator("operator@connecfy.test", OPERATOR_PASSWORD)
        login = {"email": "operator@connecfy.test", "password": OPERATOR_PASSWORD}
        assert expect(world.api().post("/api/auth/login/", json=login), 200)["operator"] is True

        kept = expect(
            owner.post("/api/sms/send/", json={"to": TO, "message": "kept", "device_id": phone.device_id}), 202
        )
        time.sleep(1.2)  # the append-only file is synced once a second
        left = children(first)
        assert len(left) == 4  # Redis, the background process, two workers
    finally:
        world.close()
        first.kill()  # SIGKILL: serve stops nothing itself
    deadline = time.monotonic() + 10
    while any(alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.cmdline() for p in left if alive(p)] == [], "children outlived their serve"

    after = ServerProcess(tmp_path, workers=1).start()  # the lock went with the first
    world = World(after)
    try:
        user = world.api()
        expect(user.post("/api/auth/login/", json={"email": owner.account["email"], "password": PASSWORD}), 200)
        assert expect(user.get(f"/api/sms/{kept['id']}/"), 200)["status"] == "queued"
        device = world.api(**{"X-Device-Token": phone.token})
        tasks = expect(device.get(f"/api/devices/{phone.device_id}/tasks/"), 200)
        assert [task["id"] for task in tasks] == [kept["id"]]
    finally:
        world.close()
        code = after.stop()
    assert code == 0, after.output()[-3000:]
