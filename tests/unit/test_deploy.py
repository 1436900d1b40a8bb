"""The files in deploy/ hold together: the systemd units pass ``systemd-analyze
verify``, the example environment names only settings Connecfy knows, the compose file
wires Connecfy to its Redis and PostgreSQL with settings it knows, the Redis and
PostgreSQL configuration files are taken by the servers they are for, and the Prometheus
alert rules and example configuration pass ``promtool`` (the rules also fire, and stay
quiet, where they should: ``promtool test rules``). Whether the dashboard and the rules
query metrics that exist: tests/e2e/test_monitoring.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
import yaml

from broker.settings import Settings
from connecfy.redis_server import RedisServer
from tests.support.cluster import cluster_port
from tests.support.postgres_server import postgres_bin
from tests.support.prometheus import prometheus_program

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


def verify_unit(tmp_path: Path, name: str, text: str) -> None:
    """``systemd-analyze verify`` of ``text`` saved as ``name``, without its User= and
    Group= lines (those users need not exist here)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install.sh --test installs Debian's systemd"
    local = "\n".join(line for line in text.splitlines() if not line.startswith(("User=", "Group=")))
    (tmp_path / name).write_text(local)
    result = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert name not in result.stderr, result.stderr


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "connecfy.service").read_text()
    assert "ExecStart=/opt/connecfy/.venv/bin/connecfy serve " in unit
    # Point it at this checkout's console script.
    verify_unit(tmp_path, "connecfy.service", unit.replace("/opt/connecfy/.venv/bin", str(Path(sys.executable).parent)))


def config_lines(path: Path) -> dict[str, str]:
    """``name value`` lines of a Redis or PostgreSQL configuration file (``name = value``)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.replace("=", " ", 1).partition(" ")
            found[name.strip()] = value.strip().strip("'")
    return found


def test_the_redis_cluster_node_unit_verifies_and_its_node_starts_in_cluster_mode(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "connecfy-redis@.service").read_text()
    assert "ExecStart=/usr/bin/redis-server /etc/connecfy/redis-cluster-node.conf --port %i" in unit
    verify_unit(tmp_path, "connecfy-redis@7001.service", unit)
    settings = config_lines(DEPLOY / "redis" / "cluster-node.conf")
    assert settings["cluster-enabled"] == "yes" and settings["maxmemory-policy"] == "noeviction"
    options = [word for name, value in settings.items() for word in (f"--{name}", value)]
    with (
        RedisServer(tmp_path / "node", port=cluster_port(), options=options) as server,
        redis.Redis.from_url(server.url) as client,
    ):
        assert client.info("cluster")["cluster_enabled"] == 1
        found = client.config_get("*")
    for name, value in settings.items():
        assert found[name] == value, name


def test_the_postgresql_unit_verifies_and_postgresql_takes_its_settings(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "connecfy-postgresql.service").read_text()
    shipped = "/usr/lib/postgresql/15/bin/postgres"
    assert f"ExecStart={shipped} -D /var/lib/connecfy-postgresql" in unit
    bin_dir = postgres_bin()
    assert bin_dir is not None, "no PostgreSQL binaries: install.sh --test installs Debian's postgresql"
    verify_unit(tmp_path, "connecfy-postgresql.service", unit.replace(shipped, str(bin_dir / "postgres")))
    # postgres -C reads a data directory's settings as the server would at start, and
    # fails on a name or value it does not take.
    settings = config_lines(DEPLOY / "postgresql" / "connecfy.conf")
    runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's tmp_path: as root, the postgres user could not reach into it.
    with tempfile.TemporaryDirectory(prefix="connecfy-test-pgconf-") as root:
        if runas:
            shutil.chown(root, "postgres", "postgres")
        data = Path(root) / "data"
        made = subprocess.run(
            [*runas, str(bin_dir / "initdb"), "-D", str(data), "--no-sync", "-U", "postgres"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        with (data / "postgresql.conf").open("a") as conf:
            conf.write((DEPLOY / "postgresql" / "connecfy.conf").read_text())
        for name, value in settings.items():
            shown = subprocess.run(
                [*runas, str(bin_dir / "postgres"), "-D", str(data), "-C", name],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert shown.returncode == 0, shown.stderr
            assert shown.stdout.strip() == value, name


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


MONITORING = DEPLOY / "monitoring"


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_program("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_the_alert_rules_pass_promtool() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    result = run_promtool("check", "rules", str(MONITORING / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout, result.stdout
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert
        assert "for" in alert and alert["annotations"]["summary"] and alert["annotations"]["description"], alert


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = (MONITORING / "alerts.yml").read_text().replace("== 0\n        for: 1m", "== \n        for: 1m", 1)
    assert broken != (MONITORING / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    assert run_promtool("check", "rules", str(tmp_path / "alerts.yml")).returncode != 0


def test_the_example_prometheus_configuration_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "connecfy" and 'up{job="connecfy"}' in (MONITORING / "alerts.yml").read_text()
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    # promtool opens the token file and the rule files: a token file here, the rules beside.
    token = tmp_path / "connecfy-metrics-token"
    token.write_text("a-token\n")
    job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    result = run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rules found" in result.stdout, result.stdout


# Each case: input series (promtool's expanding notation, one sample a minute), the
# alerts firing at the given minute (name -> labels of each), for `promtool test rules`.
RULE_CASES = {
    "pool_no_phone": (
        {
            'connecfy_queued_messages{queue="pool", shard="platform", instance="a"}': "3x20",
            'connecfy_devices_online{shard="platform", instance="a"}': "1 1 0x18",
        },
        {4: [], 8: [("ConnecfyPoolNoPhoneOnline", {})]},
    ),
    "pool_phone_online": (
        {
            'connecfy_queued_messages{queue="pool", shard="platform", instance="a"}': "3x20",
            'connecfy_devices_online{shard="platform", instance="a"}': "1x20",
        },
        {10: []},
    ),
    "pool_wait": (
        {'connecfy_pool_wait_seconds{shard="platform", instance="a"}': "0+60x30"},
        {10: [], 25: [("ConnecfyPoolWaitLong", {})]},
    ),
    "redis_down": (
        {
            'connecfy_redis_up{instance="a"}': "1 1 0x10",
            'connecfy_redis_up{instance="b"}': "1x12",
        },
        {2: [], 5: [("ConnecfyRedisUnreachable", {"instance": "a"})]},
    ),
    "endpoint_disabled": (
        {'connecfy_webhook_attempts_total{outcome="disabled", instance="a"}': "0 0 0 1x10"},
        {2: [], 6: [("ConnecfyWebhookEndpointDisabled", {})]},
    ),
    "errors": (
        {
            'connecfy_http_requests_total{route="/api/sms/send/", method="POST", status="202", instance="a"}': "0+600x30",
            'connecfy_http_requests_total{route="/api/sms/send/", method="POST", status="503", instance="a"}': (
                "0x10 0+120x20"
            ),
        },
        {9: [], 25: [("ConnecfyHighErrorRatio", {})]},
    ),
    "few_errors": (
        {
            'connecfy_http_requests_total{route="/healthz", method="GET", status="200", instance="a"}': "0+600x30",
            'connecfy_http_requests_total{route="/healthz", method="GET", status="500", instance="a"}': "0+6x30",
        },
        {25: []},
    ),
}


def test_the_alerts_fire_where_they_should(tmp_path: Path) -> None:
    tests = []
    for name, (series, expected) in RULE_CASES.items():
        tests.append(
            {
                "name": name,
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": f"{minute}m",
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": {"severity": _severity(alert), **labels}}],
                    }
                    for minute, firing in expected.items()
                    for alert, labels in firing
                ]
                + [
                    {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []}
                    for minute, firing in expected.items()
                    if not firing
                    for alert in _alerts()
                ],
            }
        )
    # promtool compares annotations too: the rules are tested without theirs.
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            del rule["annotations"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "alerts_test.yml").write_text(
        yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests})
    )
    result = run_promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def _alerts() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


def _severity(alert: str) -> str:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    [severity] = [r["labels"]["severity"] for g in rules["groups"] for r in g["rules"] if r["alert"] == alert]
    return str(severity)
