"""docker-compose.yml against the Compose JSON schema, paths it mounts/builds, Prometheus and Grafana files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO.parent / "shared" / "schemas" / "compose-spec.json"
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_validates_against_schema():
    if not SCHEMA.exists():
        pytest.skip(f"needs {SCHEMA} (the team's ../shared/schemas), absent in this clone")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(COMPOSE, schema, cls=jsonschema.validators.validator_for(schema))


def test_services_and_paths_exist():
    services = COMPOSE["services"]
    assert {"kafka", "worker", "sim-llm", "prometheus", "grafana"} <= set(services)
    from streams.harness.brokers.kafka import pinned_version

    assert services["kafka"]["image"] == f"apache/kafka:{pinned_version()}"  # what the tests and drills run
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert any("local-llm" in s.get("profiles", []) for s in services.values())
    worker = services["worker"]
    assert worker["command"] == ["worker"] and "ports" not in worker  # scalable: no fixed host port
    assert worker["environment"]["LLMENS_KAFKA__BOOTSTRAP"] == "kafka:9092"
    assert worker["environment"]["LLMENS_WEB_HOST"] == "0.0.0.0"
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            ctx = REPO / build.get("context", ".")
            assert ctx.is_dir(), name
            assert (ctx / build.get("dockerfile", "Dockerfile")).is_file(), name
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("."):
                assert (REPO / src).exists(), f"{name}: {src} does not exist"
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and 'ENTRYPOINT ["llmens"]' in dockerfile
    for src in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (REPO / src).exists(), src


def test_prometheus_and_grafana_files_parse():
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "llmens-worker")
    assert job["metrics_path"] == "/metrics"
    assert "worker" in job["dns_sd_configs"][0]["names"] and job["dns_sd_configs"][0]["port"] == 6066
    prov = REPO / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    dash_prov = yaml.safe_load((prov / "dashboards" / "llmens.yml").read_text())
    assert dash_prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboards = list((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    dash = json.loads(dashboards[0].read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for metric in ("llmens_kafka_consumergroup_lag", "llmens_events_in_total", "llmens_events_out_total",
                   "llmens_llm_errors_total", "llmens_llm_request_seconds_bucket", "llmens_llm_weight",
                   "llmens_llm_accuracy", "llmens_decision_confidence_bucket", "llmens_dead_letters_total"):
        assert metric in exprs, metric
    # every metric the dashboard queries is one the worker exports
    from streams.metrics import WorkerMetrics, render_metrics

    m = WorkerMetrics()
    m.attach_gateway(lambda: {})
    exported = {line.split()[2] for line in render_metrics(m.registry)[0].decode().splitlines()
                if line.startswith("# TYPE")}
    exported |= {"llmens_kafka_consumergroup_lag", "llmens_llm_request_seconds", "llmens_llm_errors",
                 "llmens_llm_retries", "llmens_llm_breaker_open", "llmens_llm_tokens", "llmens_llm_cost"}
    for name in set(re.findall(r"llmens_[a-z_]+", exprs)):
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert name in exported or base in exported, name


def test_example_settings_load():
    from llmens_core.llm.config import EndpointConfig
    from streams.settings import read_config_file

    path = REPO / "deploy" / "llmens.yaml"
    data = read_config_file(path)
    assert [e["name"] for e in data["llms"]][:1] == ["sim-large"]
    assert all(e["base_url"].startswith("http://sim-llm:") for e in data["llms"])
    # the commented provider examples are valid endpoint configs once uncommented
    text = path.read_text().split("# Real providers", 1)[1]
    block = "\n".join(line[2:] for line in text.splitlines() if line.startswith("#  "))
    examples = yaml.safe_load(block)
    endpoints = [EndpointConfig(**e) for e in examples]
    assert {e.provider for e in endpoints} == {"openai", "anthropic", "gemini"}
    assert any(e.prompt == "ecinstruct" for e in endpoints)


def _deploy_provider_lines(path: Path) -> list[str]:
    """The commented real-provider entries of a deploy settings file, uncommented (cloud providers to vLLM)."""
    lines = path.read_text().splitlines()
    start = lines.index("#  - name: gpt-4o-mini")
    end = next(i for i, line in enumerate(lines) if line.startswith("#  # Ollama"))
    block = [line[1:] for line in lines[start:end]]
    while block and not block[-1].strip():
        block.pop()
    return block


def _readme_provider_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("```yaml\n# Real providers", 1)[1].split("```", 1)[0]
    return block.split("\nllms:\n", 1)[1].rstrip("\n").splitlines()


@pytest.mark.parametrize("deploy", ["llmens.yaml", "llmens.local.yaml"])
def test_readme_provider_example_is_the_deploy_text(deploy):
    assert _readme_provider_lines() == _deploy_provider_lines(REPO / "deploy" / deploy)


def test_readme_provider_example_calls_the_real_apis():
    """Each entry loads, names a key docker-compose passes through, and calls the provider's documented URL."""
    from anthropic.types import ModelParam

    from llmens_core.llm.config import EndpointConfig
    from llmens_core.llm.providers import PROVIDERS

    entries = yaml.safe_load("\n".join(["llms:", *_readme_provider_lines()]))["llms"]
    eps = {e.provider: e for e in (EndpointConfig(**x) for x in entries) if e.api_key_env}
    passed = set(COMPOSE["services"]["worker"]["environment"])
    assert {e.api_key_env for e in eps.values()} <= passed
    assert {p: PROVIDERS[p].url(e) for p, e in eps.items()} == {
        "openai": "https://api.openai.com/v1/chat/completions",
        "anthropic": "https://api.anthropic.com/v1/messages",
        "gemini": "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
    }
    known_claude = ModelParam.__args__[0].__args__  # the Literal of model ids the anthropic SDK knows
    assert eps["anthropic"].model in known_claude
