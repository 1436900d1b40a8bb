"""deploy/monitoring/ against a real ``connecfy serve``: every metric that the Grafana
dashboard and the Prometheus alert rules query is on its /metrics after a little
traffic (a send to a phone and to the platform pool, a heartbeat, a claim, a report),
with the labels their selectors name. The expressions are read, not listed by hand:
a misspelled metric, label or function in either file fails here.

Then Debian's Prometheus, with the example configuration and the rules, scrapes that
server with the metrics token: every dashboard query evaluates and has data (but the
5xx ratio, with no 5xx), every rule evaluates, and the one alert the server's state
calls for (a pool message, no pool phone) is pending."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.observability import GAUGES_MAX_AGE_SECONDS
from tests.support.e2e_server import ServerProcess, expect, free_port
from tests.support.http_world import TO, World
from tests.support.prometheus import prometheus_program

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
TOKEN = "metrics-" + uuid.uuid4().hex

# Series Prometheus makes itself for every target, and labels it adds to every series.
PROMETHEUS_SERIES = frozenset({"up"})
TARGET_LABELS = frozenset({"job", "instance"})
# PromQL's functions and aggregations (called with parentheses) and its other words.
FUNCTION_WORDS = """
abs absent absent_over_time avg avg_over_time bottomk ceil changes clamp clamp_max clamp_min count
count_over_time count_values day_of_month day_of_week days_in_month delta deriv exp floor group
histogram_quantile holt_winters hour idelta increase irate label_join label_replace last_over_time ln
log10 log2 max max_over_time min min_over_time minute month predict_linear quantile quantile_over_time
rate resets round scalar sgn sort sort_desc sqrt stddev stdvar sum sum_over_time time timestamp topk
vector year
"""
KEYWORD_WORDS = "and or unless bool offset by without on ignoring group_left group_right"
FUNCTIONS = frozenset(FUNCTION_WORDS.split())
KEYWORDS = frozenset(KEYWORD_WORDS.split())

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
RANGE = re.compile(r"\[[^\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
TOKEN_RE = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """The series an expression selects: each metric name with the label names its
    matchers use. A word that is neither a known function nor a PromQL keyword is
    taken as a metric name, so a misspelled function shows up as a missing metric."""
    text = RANGE.sub("", STRING.sub('""', expr))
    text = GROUPING.sub(" ", text)
    found: list[tuple[str, frozenset[str]]] = []
    for name, matchers, call in TOKEN_RE.findall(text):
        if call and not matchers:
            if name not in FUNCTIONS:
                found.append((f"{name}(", frozenset()))  # an unknown function: reported as missing
            continue
        if name in KEYWORDS:
            continue
        found.append((name, frozenset(MATCHER.findall(matchers))))
    return found


def dashboard_expressions(dashboard: dict) -> list[tuple[str, str]]:
    def panels(items: list[dict]) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    return [
        (f"dashboard panel {panel['title']!r}", target["expr"])
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def rule_expressions(rules: dict) -> list[tuple[str, str]]:
    return [
        (f"alert {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def every_expression() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return dashboard_expressions(dashboard) + rule_expressions(rules)


Exposed = dict[str, set[str]]  # sample name -> every label name it has


def unknown_series(expressions: list[tuple[str, str]], exposed: Exposed) -> list[str]:
    """What each expression selects that the scrape does not have: metric names (by
    their sample names: ``_total``, ``_bucket``, ``_sum``, ``_count`` included) and
    label names in their matchers."""
    problems = []
    for where, expr in expressions:
        for name, labels in selectors(expr):
            if name in PROMETHEUS_SERIES:
                continue
            if name not in exposed:
                problems.append(f"{where}: {name} is not on /metrics")
                continue
            for label in sorted(labels - exposed[name] - TARGET_LABELS):
                problems.append(f"{where}: {name} has no label {label!r}")
    return problems


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server after a little traffic: a message sent to a phone, claimed and reported
    sent, and one waiting in the platform pool, which has no phone."""
    process = ServerProcess(tmp_path_factory.mktemp("monitoring"), settings={"CONNECFY_METRICS_TOKEN": TOKEN}).start()
    world = World(process)
    try:
        owner = world.signup("self_managed", prefix="monitoring")
        phone = world.pair(owner)
        sent = expect(owner.post("/api/sms/send/", json={"device_id": phone.device_id, "to": TO, "message": "hi"}), 202)
        [task] = expect(phone.tasks(), 200)
        assert task["id"] == sent["id"]
        expect(phone.report(sent["id"], "sent"), 200)
        api_only = world.signup("api_only", prefix="monitoring-pool")
        expect(api_only.post("/api/sms/send/", json={"to": TO, "message": "to the pool"}), 202)
        time.sleep(GAUGES_MAX_AGE_SECONDS + 0.1)
        yield process
    finally:
        world.close()
        assert process.stop() == 0, process.output()[-3000:]


@pytest.fixture(scope="module")
def exposed(server: ServerProcess) -> Exposed:
    response = httpx.get(f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    found: Exposed = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    assert found.get("connecfy_redis_up") is not None
    return found


def test_the_files_query_something() -> None:
    expressions = every_expression()
    names = {name for _, expr in expressions for name, _ in selectors(expr)}
    # Each thing the issue asks to watch is queried somewhere.
    assert {
        "connecfy_http_requests_total",
        "connecfy_http_request_duration_seconds_bucket",
        "connecfy_queued_messages",
        "connecfy_devices_online",
        "connecfy_claims_total",
        "connecfy_webhook_delay_seconds_bucket",
        "connecfy_webhook_attempts_total",
        "connecfy_redis_up",
        "connecfy_pool_wait_seconds",
    } <= names, names
    rules = {where for where, _ in rule_expressions(yaml.safe_load((MONITORING / "alerts.yml").read_text()))}
    assert {
        "alert ConnecfyRedisUnreachable",
        "alert ConnecfyPoolNoPhoneOnline",
        "alert ConnecfyPoolWaitLong",
        "alert ConnecfyWebhookEndpointDisabled",
        "alert ConnecfyHighErrorRatio",
    } <= rules, rules


def test_the_dashboard_imports_with_a_prometheus_data_source_input() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    assert dashboard["id"] is None and dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] != "row":
            assert panel["targets"] and panel["description"], panel["title"]
            for source in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
                assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]


def test_every_metric_the_dashboard_and_alerts_use_is_served(exposed: Exposed) -> None:
    assert unknown_series(every_expression(), exposed) == []


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(connecfy_http_request_total[5m]))", "connecfy_http_request_total is not on /metrics"),
        ("rate(connecfy_claims[5m])", "connecfy_claims is not on /metrics"),  # the family, not the sample
        ("connecfy_http_request_duration_seconds_buckets", "is not on /metrics"),
        ('max(connecfy_devices_online{shards="platform"})', "has no label 'shards'"),
        ("sum(rat(connecfy_claims_total[5m]))", "rat( is not on /metrics"),
        ('max(connecfy_pool_wait_second{shard="platform"}) > 900', "connecfy_pool_wait_second is not on /metrics"),
    ],
)
def test_a_misspelled_name_is_caught(exposed: Exposed, expr: str, problem: str) -> None:
    [found] = unknown_series([("alert X", expr)], exposed)
    assert problem in found, found


def test_words_that_are_not_metrics_are_not_taken_for_metrics() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route!~".*long poll.*"}[$__rate_interval])))'
        ' > 1e3 and on (instance) b{job="x"} offset 5m unless max without (shard) (c)'
    )
    assert selectors(expr) == [
        ("a_bucket", frozenset({"route"})),
        ("b", frozenset({"job"})),
        ("c", frozenset()),
    ]


# A real Prometheus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Prometheus on loopback with deploy/monitoring's configuration and rules,
    scraping the server once a second with the metrics token from a file."""
    binary = prometheus_program("prometheus")
    where = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    [job] = config["scrape_configs"]
    (where / "token").write_text(TOKEN + "\n")
    job["authorization"]["credentials_file"] = str(where / "token")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    (where / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(MONITORING / "alerts.yml", where / "alerts.yml")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(where / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={where / 'prometheus.yml'}",
                f"--storage.tsdb.path={where / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: httpx.get(f"{url}/-/ready").status_code == 200, 20, where / "prometheus.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(ready: Callable[[], bool], seconds: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s" + (f":\n{log.read_text()[-3000:]}" if log else ""))


def query(prometheus: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    return list(answer["data"]["result"])


def test_prometheus_scrapes_with_the_token_evaluates_the_dashboard_and_the_rules(prometheus: str) -> None:
    # Up with the bearer token, and scraped often enough for rate() over a minute.
    wait_until(lambda: [r["value"][1] for r in query(prometheus, 'up{job="connecfy"}')] == ["1"], 20)
    wait_until(lambda: float(query(prometheus, 'count_over_time(up{job="connecfy"}[1m])')[0]["value"][1]) >= 3, 20)
    assert query(prometheus, 'max(connecfy_queued_messages{queue="pool", shard="platform"})')[0]["value"][1] == "1"

    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    empty = []
    for where, expr in dashboard_expressions(dashboard):
        if not query(prometheus, expr.replace("$__rate_interval", "1m")):
            empty.append(where)
    # Only the 5xx ratio has nothing to show: no request failed.
    assert empty == ["dashboard panel '5xx ratio'"], empty

    def evaluated() -> list[dict]:
        groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_until(lambda: all(rule["lastEvaluation"] > "2000" for rule in evaluated()), 20)
    assert {rule["name"]: rule["health"] for rule in evaluated()} == dict.fromkeys(
        [
            rule["alert"]
            for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]
        ],
        "ok",
    )
    # The platform pool has a message and no phone: that alert is on its way, and only it.
    alerts = httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
    assert [(a["labels"]["alertname"], a["state"]) for a in alerts] == [("ConnecfyPoolNoPhoneOnline", "pending")]
