"""The alert rules (deploy/prometheus/alerts.yml) with Prometheus's own tool: they parse, and each fires on the
series it is meant for and not on a healthy neighbour (deploy/prometheus/alerts_test.yml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool absent: `apt-get install prometheus` "
                                    "(Debian) brings it; bench/prometheus_check.py says the same")


def test_the_four_alerts_exist_and_compose_loads_them():
    names = {r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert names == {"LlmensConsumerLagGrowing", "LlmensPartitionStalled", "LlmensDeadLetters",
                     "LlmensLlmBreakerOpen"}
    prom = yaml.safe_load((RULES.parent / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]


@needs_promtool
def test_promtool_check_rules():
    res = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert res.returncode == 0 and "SUCCESS: 4 rules found" in res.stdout, res.stdout + res.stderr


@needs_promtool
def test_promtool_test_rules():
    res = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr
