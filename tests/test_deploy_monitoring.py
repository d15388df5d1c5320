"""The Grafana dashboard and the Prometheus alert rules in deploy/ only reference metrics the
services export: a renamed metric would otherwise leave an empty panel or a silent alert."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from offsync_shared import metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NAME = re.compile(r"\b(offsync_[a-z0-9_]+)")


def exported_names() -> set[str]:
    """Every sample name the services' metrics expose (counters add _total, histograms their series)."""
    names: set[str] = set()
    for obj in vars(metrics).values():
        if not isinstance(obj, (Counter, Gauge, Histogram)):
            continue
        for family in obj.describe():
            if isinstance(obj, Counter):
                names.add(f"{family.name}_total")
            elif isinstance(obj, Histogram):
                names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
            else:
                names.add(family.name)
    return names


def dashboard_exprs() -> list[str]:
    doc = json.loads((DEPLOY / "grafana" / "offsync-dashboard.json").read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "offsync-alerts.yaml").read_text())
    return [str(r["expr"]) for g in doc["groups"] for r in g["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_referenced_metric_is_exported(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    assert exprs, f"no expressions found in the {source}"
    referenced = {m for e in exprs for m in NAME.findall(e)}
    missing = sorted(referenced - exported_names())
    assert not missing, f"{source} references metrics no service exports: {missing}"


def test_alerts_cover_lag_backlog_errors_and_down() -> None:
    exprs = " ".join(alert_exprs())
    for needed in ("offsync_consumer_lag_messages", "offsync_outbox_", 'status=~"5.."', "up{"):
        assert needed in exprs, needed


def test_publish_lag_stage_is_the_one_publish_service_records() -> None:
    worker = Path(__file__).resolve().parent.parent / "publish-service" / "publish_service" / "worker.py"
    assert 'LATENCY.labels("record_commit_to_op")' in worker.read_text()
    assert any('stage="record_commit_to_op"' in e for e in dashboard_exprs() + alert_exprs())
