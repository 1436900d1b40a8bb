"""The campaign bench still runs end to end (``--tiny``: a smoke run, not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_campaign_bench_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "campaign.json"
    result = subprocess.run(
        [sys.executable, "bench/campaign.py", "--tiny", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    assert figures["rows"] == 2_000 and figures["report"]["valid"] == 2_000, figures
    assert figures["campaign_messages_per_s"] > 0 and figures["batch_messages_per_s"] > 0
    assert figures["worker_rss_peak_mib"] >= figures["worker_rss_before_mib"] > 0
    assert "campaign_messages_per_s" in result.stdout
