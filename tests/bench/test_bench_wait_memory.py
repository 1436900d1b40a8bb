"""``bench/wait_memory.py``, tiny, against real servers it starts: 30 phones over two
client processes, the server as it is and the bare app. It checks the bench's
bookkeeping, never the memory: every phone connected and waiting until the last
measurement (none answered early), the three points measured over serve, its two
workers and (for connecfy) its background process, and the figures derived from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PHONES = 30


def test_each_phone_connects_and_waits_and_every_server_process_is_measured(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.wait_memory",
            "--phones",
            str(PHONES),
            "--phones-per-process",
            "20",
            "--settle",
            "2",
            "--variant",
            "base",
            "--variant",
            "bare",
            "--quiet",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"base", "bare"}
    for name, roles in (("base", ["background", "serve", "worker", "worker"]), ("bare", ["serve", "worker", "worker"])):
        result = results[name]
        assert result["connected"] == PHONES, result
        assert result["answered_early"] == 0, result
        for point in ("paired", "connections", "waits"):
            figures = result["points"][point]
            assert sorted(p["role"] for p in figures["processes"]) == roles, (name, point, figures)
            assert figures["rss"] == sum(p["rss"] for p in figures["processes"]) > 0
            assert 0 < figures["pss"] <= figures["rss"]
        expected = (result["points"]["waits"]["rss"] - result["points"]["connections"]["rss"]) / PHONES / 1024
        assert result["rss_per_wait_kib"] == expected
    assert "| base | 1 |" in done.stdout and "| bare | 1 |" in done.stdout
