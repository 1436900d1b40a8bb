"""The files in deploy/ hold together: the systemd unit passes ``systemd-analyze
verify``, the example environment names only settings Connecfy knows, and the compose
file wires Connecfy to its Redis and PostgreSQL with settings it knows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from broker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _env_lines(text: str) -> dict[str, str]:
    """``NAME=value`` lines of an environment file, commented-out examples included."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        name, sep, value = line.partition("=")
        if sep and name.isupper() and " " not in name:
            found[name] = value
    return found


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install.sh --test installs Debian's systemd"
    unit = (DEPLOY / "systemd" / "connecfy.service").read_text()
    assert "ExecStart=/opt/connecfy/.venv/bin/connecfy serve " in unit
    # Point it at this checkout's console script; the connecfy user need not exist here.
    local = "\n".join(
        line
        for line in unit.replace("/opt/connecfy/.venv/bin", str(Path(sys.executable).parent)).splitlines()
        if not line.startswith(("User=", "Group="))
    )
    (tmp_path / "connecfy.service").write_text(local)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "connecfy.service")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "connecfy.service" not in result.stderr, result.stderr


def test_the_example_environment_names_known_settings_only() -> None:
    values = _env_lines((DEPLOY / "systemd" / "connecfy.env.example").read_text())
    assert {"REDIS_URL", "CONNECFY_DATABASE_URL", "CONNECFY_TRUST_FORWARDED_FOR"} <= set(values)
    Settings.from_env(values)  # an unknown CONNECFY_* name or a bad value raises


def test_the_compose_file_wires_connecfy_to_its_services() -> None:
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "connecfy"}
    app = services["connecfy"]
    environment = {k: str(v) for k, v in app["environment"].items()}
    settings = Settings.from_env(environment)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.database_url.startswith("postgresql://") and "@postgres/" in settings.database_url
    assert set(app["depends_on"]) == {"redis", "postgres"}
    assert "noeviction" in services["redis"]["command"]
    context = (DEPLOY / "container" / app["build"]["context"]).resolve()
    assert context == ROOT
    dockerfile = (context / app["build"]["dockerfile"]).read_text()
    assert '.venv/bin/connecfy", "serve"' in dockerfile
