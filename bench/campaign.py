#!/usr/bin/env python3
"""A 100,000-row campaign against a real ``connecfy serve`` (one worker, its private
Redis, its background process), over HTTP, beside the batch send in the same run.

Run it from the repository root::

    python3 bench/campaign.py                    # 100,000 rows
    python3 bench/campaign.py --tiny             # 2,000 rows: a smoke run
    python3 bench/campaign.py --rows 50000 --json /tmp/campaign.json

Measured:

- validation: the upload's request time (the file checked row by row, the suppression
  list asked, the campaign and its rows stored), with the report it gives;
- the request worker's RSS before the upload and its peak during it (sampled every
  10 ms), and the file's size;
- queueing: from the start's 202 to the state ``done``, in messages/s, while the
  background process queues the rows through the enqueue script, a chunk at a time;
- the batch send's rate in the same run: as many messages through
  ``POST /api/external/send-batch/``, one client, batches of the campaign's chunk size
  (500), one after the other; once before the campaign and once after it (Redis holds
  more, and the history store has more to copy, as a run goes on), both reported.

The account's send limit and daily quota are raised out of the way (the operator's
limits), so both rates are what the server does, not what the limits allow.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load.deployment import LocalServer
from broker.campaigns import CHUNK_ROWS

TEMPLATE = "Hello {name}, your order {order} ships today. Reply STOP to opt out."
BIG = "10000000"


def csv_rows(rows: int, first: int) -> bytes:
    lines = ["phone,name,order"]
    lines += [f"+1555{first + i:07d},Customer {i},A-{i:06d}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def request_workers(server_pid: int) -> list[psutil.Process]:
    """The granian request workers: serve's descendants that are neither Redis nor the
    background process nor granian's own supervisor."""
    found = []
    for p in psutil.Process(server_pid).children(recursive=True):
        line = " ".join(p.cmdline())
        if "redis" in line or "background" in line or p.children():
            continue
        found.append(p)
    return found


class RssSampler(threading.Thread):
    def __init__(self, processes: list[psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.peak = 0
        self.halt = threading.Event()

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes)

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.01)


def expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json()


def login(base_url: str, email: str, password: str, *, signup: bool = False) -> tuple[httpx.Client, str]:
    """A dashboard client, and its account's id."""
    client = httpx.Client(base_url=base_url, timeout=120)
    if signup:
        body = {"email": email, "password": password, "account_type": "self_managed"}
        account = expect(client.post("/api/auth/signup/", json=body), 201)
    else:
        account = expect(client.post("/api/auth/login/", json={"email": email, "password": password}), 200)
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    return client, str(account.get("id", ""))


def batch_send(client: httpx.Client, key: str, rows: int, first: int) -> float:
    """Send ``rows`` messages in batches of CHUNK_ROWS, one after the other: seconds taken."""
    began = time.perf_counter()
    sent = 0
    while sent < rows:
        size = min(CHUNK_ROWS, rows - sent)
        messages = [
            {"to": f"+1555{first + sent + i:07d}", "message": f"Hello Customer {sent + i}, your order ships today."}
            for i in range(size)
        ]
        expect(client.post("/api/external/send-batch/", json={"api_key": key, "messages": messages}), 202)
        sent += size
    return time.perf_counter() - began


def run(rows: int) -> dict[str, Any]:
    server = LocalServer(workers=1, time_scale=1.0, extra={"CONNECFY_BATCH_MAX_MESSAGES": "1000"})
    deployment = server.start()
    try:
        base = deployment.base_url
        operator, _ = login(base, deployment.operator_email, deployment.operator_password)
        sender, account_id = login(base, "campaigns@bench.invalid", "bench sender password", signup=True)
        limits = {"sends_per_second": int(BIG), "sends_burst": int(BIG), "daily_quota": int(BIG)}
        expect(operator.patch(f"/api/operator/accounts/{account_id}/limits/", json=limits), 200)
        key = expect(sender.post("/api/api-keys/", json={"name": "bench"}), 201)["api_key"]

        batch_client = httpx.Client(base_url=base, timeout=120)
        batch_before_s = batch_send(batch_client, key, rows, 3_000_000)

        body = csv_rows(rows, 1_000_000)
        assert deployment.server_pid is not None
        workers = request_workers(deployment.server_pid)
        sampler = RssSampler(workers)
        rss_before = sampler.rss()
        sampler.start()
        began = time.perf_counter()
        campaign = expect(
            sender.post(
                "/api/campaigns/",
                files={"file": ("bench.csv", body, "text/csv")},
                data={"name": "bench", "template": TEMPLATE},
            ),
            201,
        )
        validation_s = time.perf_counter() - began
        sampler.halt.set()
        sampler.join()
        report = campaign["report"]
        if report["valid"] != rows:
            raise RuntimeError(f"the report says {report['valid']} valid rows of {rows}")

        began = time.perf_counter()
        expect(sender.post(f"/api/campaigns/{campaign['id']}/start/"), 202)
        while True:
            state = expect(sender.get(f"/api/campaigns/{campaign['id']}/"), 200)
            if state["state"] == "done":
                break
            if state["state"] not in ("sending", "paused"):
                raise RuntimeError(f"the campaign stopped: {state}")
            time.sleep(0.05)
        queueing_s = time.perf_counter() - began
        batch_after_s = batch_send(batch_client, key, rows, 5_000_000)

        for client in (operator, sender, batch_client):
            client.close()
        return {
            "rows": rows,
            "file_bytes": len(body),
            "validation_s": round(validation_s, 3),
            "validation_rows_per_s": round(rows / validation_s),
            "report": {
                k: report[k] for k in ("rows", "valid", "invalid_rows", "duplicates", "opted_out", "max_segments")
            },
            "worker_rss_before_mib": round(rss_before / 2**20, 1),
            "worker_rss_peak_mib": round(sampler.peak / 2**20, 1),
            "campaign_queueing_s": round(queueing_s, 3),
            "campaign_messages_per_s": round(rows / queueing_s),
            "batch_before_messages_per_s": round(rows / batch_before_s),
            "batch_after_messages_per_s": round(rows / batch_after_s),
            "batch_messages_per_s": round(2 * rows / (batch_before_s + batch_after_s)),
            "chunk_rows": CHUNK_ROWS,
        }
    finally:
        status = server.stop()
        if status not in (0, None):
            print(f"connecfy serve exited with {status}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tiny", action="store_true", help="2,000 rows: a smoke run")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    figures = run(2_000 if args.tiny else args.rows)
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
