"""The Prometheus config, alert rules (with promtool's own rule tests) and the Grafana dashboard
are valid and only name metrics rowstream exports."""

import json
import re
import subprocess
from pathlib import Path

from app.observe import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def promtool_ok(promtool, *args):
    done = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, cwd=DEPLOY / "prometheus"
    )
    assert done.returncode == 0, done.stdout + done.stderr


def exported_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_prometheus_config_and_alerts(promtool):
    promtool_ok(promtool, "check", "config", "prometheus.yml")
    promtool_ok(promtool, "check", "rules", "alerts.yml")
    promtool_ok(promtool, "test", "rules", "alerts_test.yml")


def test_dashboard_and_alerts_use_only_exported_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "rowstream.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions.append((DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = {name for expr in expressions for name in re.findall(r"rowstream_[a-z_]+", expr)}
    known = exported_names() | {
        "rowstream_message_lag",
        "rowstream_waiting_updates",
        "rowstream_time_lag_seconds",
    }
    assert used and used <= known, used - known
    titles = " ".join(panel["title"] for panel in dashboard["panels"])
    for needed in ("Message lag", "Time lag", "Rows written", "Write latency"):
        assert needed in titles
