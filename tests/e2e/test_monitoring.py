"""deploy/monitoring/ against a real ``connecfy serve``: every metric that the Grafana
dashboard and the Prometheus alert rules query is on its /metrics after a little
traffic (a send to a phone and to the platform pool, a heartbeat, a claim, a report),
with the labels their selectors name. The expressions are read, not listed by hand:
a misspelled metric, label or function in either file fails here."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.observability import GAUGES_MAX_AGE_SECONDS
from tests.support.e2e_server import ServerProcess, expect
from tests.support.http_world import TO, World

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
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposed]:
    server = ServerProcess(tmp_path_factory.mktemp("monitoring"), settings={"CONNECFY_METRICS_TOKEN": TOKEN}).start()
    world = World(server)
    try:
        owner = world.signup("self_managed", prefix="monitoring")
        phone = world.pair(owner)
        [message_id] = [
            expect(owner.post("/api/sms/send/", json={"device_id": phone.device_id, "to": TO, "message": "hi"}), 202)[
                "id"
            ]
        ]
        [task] = expect(phone.api.get(f"/api/devices/{phone.device_id}/tasks/"), 200)
        assert task["id"] == message_id
        expect(phone.report(message_id, "sent"), 200)
        api_only = world.signup("api_only", prefix="monitoring-pool")
        expect(api_only.post("/api/sms/send/", json={"to": TO, "message": "to the pool"}), 202)
        time.sleep(GAUGES_MAX_AGE_SECONDS + 0.1)

        response = httpx.get(f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        found: Exposed = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                found.setdefault(sample.name, set()).update(sample.labels)
        assert found.get("connecfy_redis_up") is not None
        yield found
    finally:
        world.close()
        assert server.stop() == 0, server.output()[-3000:]


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
