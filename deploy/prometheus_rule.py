"""``deploy/kubernetes/prometheusrule.yaml`` is made from ``deploy/prometheus/alerts.yml`` (the
one place the alert rules are written): ``python -m deploy.prometheus_rule`` writes it again,
and ``tests/unit/test_kubernetes.py`` checks that the two hold the same groups."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
RULE = DEPLOY / "kubernetes" / "prometheusrule.yaml"


def prometheus_rule() -> dict:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "rowstream"},
        "spec": {"groups": groups},
    }


def main() -> None:
    header = (
        "# Made from deploy/prometheus/alerts.yml by `python -m deploy.prometheus_rule`: edit the\n"
        "# alerts there, then run it again (a test checks the two agree).\n"
    )
    RULE.write_text(header + yaml.safe_dump(prometheus_rule(), sort_keys=False, width=100))
    print(f"wrote {RULE}")


if __name__ == "__main__":
    main()
