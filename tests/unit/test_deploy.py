"""Static checks of deploy/: every file parses and the pieces fit together.

No Docker engine or cluster is needed: the files are parsed, not run. PyYAML comes with the
dev extras.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
JSON_FILES = sorted(DEPLOY.rglob("*.json"))


def _rel(p: Path) -> str:
    return str(p.relative_to(DEPLOY))


def load_yaml(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_one(path: Path) -> Any:
    docs = load_yaml(path)
    assert len(docs) == 1, f"{_rel(path)}: expected one YAML document"
    return docs[0]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_one(DEPLOY / "compose.yaml")


def test_expected_files_exist() -> None:
    for name in (
        "Dockerfile",
        "README.md",
        "compose.yaml",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/dashboards/crm-tracker.json",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/dashboards.yml",
        "k8s/kustomization.yaml",
        "k8s/secret.example.yaml",
    ):
        assert (DEPLOY / name).is_file(), name


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path: Path) -> None:
    assert load_yaml(path), f"{_rel(path)} is empty"


@pytest.mark.parametrize("path", JSON_FILES, ids=_rel)
def test_json_parses(path: Path) -> None:
    with path.open(encoding="utf-8") as f:
        assert json.load(f)


# --- Dockerfile ----------------------------------------------------------------------------
def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert any(re.match(r"ARG PYTHON_IMAGE=python:3\.11-slim$", ln) for ln in lines)
    assert "RUN pip install ." in text
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["crm-tracker"]' in lines
    assert 'CMD ["api"]' in lines
    assert any(ln.startswith("EXPOSE") and "8000" in ln.split() for ln in lines)


# --- compose -------------------------------------------------------------------------------
def _command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("migrate", ["db", "upgrade"]),
        ("worker", ["worker"]),
        ("scheduler", ["scheduler"]),
        ("api", ["api"]),
    ],
)
def test_compose_app_services(compose: dict[str, Any], name: str, command: list[str]) -> None:
    svc = compose["services"][name]
    assert _command(svc) == command
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    env = _env(svc)
    assert env["CRM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["CRM_DATABASE_URL"].startswith("postgresql://crm:")
    assert env["CRM_DATABASE_URL"].endswith("@postgres:5432/crm")
    # required: compose refuses to start without it (${VAR:?message})
    assert env["CRM_AUTH_SECRET"].startswith("${CRM_AUTH_SECRET:?")
    assert env["CRM_KAFKA_SESSION_TIMEOUT"] == "10"
    assert env["CRM_TOPIC_PARTITIONS"] == "8"
    assert env["CRM_API_HOST"] == "0.0.0.0"


def test_compose_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "postgres", "prometheus", "grafana"):
        assert name in services, name
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.0"
    kenv = _env(kafka)
    assert "controller" in kenv["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "PLAINTEXT://:9092" in kenv["KAFKA_LISTENERS"]
    assert kenv["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert "ports" not in kafka  # internal only
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:16")
    penv = _env(pg)
    assert penv["POSTGRES_DB"] == "crm"
    assert penv["POSTGRES_USER"] == "crm"
    assert penv["POSTGRES_PASSWORD"].startswith("${")  # from the environment
    for name in ("kafka", "postgres", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert any("/healthz" in part for part in services["api"]["healthcheck"]["test"])
    assert any(str(p).endswith("8000:8000") for p in services["api"]["ports"])
    assert services["worker"]["deploy"]["replicas"] == 2


@pytest.mark.parametrize("name", ["worker", "scheduler", "api"])
def test_compose_dependencies(compose: dict[str, Any], name: str) -> None:
    deps = compose["services"][name]["depends_on"]
    assert deps["kafka"]["condition"] == "service_healthy"
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    for dep in deps:
        assert dep in compose["services"], dep


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in named, f"{name}: undeclared volume {source}"
    mounted = {v.split(":")[1] for v in compose["services"]["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= mounted


# --- Prometheus ----------------------------------------------------------------------------
def test_prometheus_config() -> None:
    cfg = load_one(DEPLOY / "prometheus" / "prometheus.yml")
    assert "alerts.yml" in cfg["rule_files"]
    targets = [
        t
        for job in cfg["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert "api:8000" in targets
    jobs = {job["job_name"] for job in cfg["scrape_configs"]}
    assert any("worker" in j for j in jobs)


def _alert_rules() -> list[dict[str, Any]]:
    doc = load_one(DEPLOY / "prometheus" / "alerts.yml")
    assert doc["groups"]
    rules = []
    for group in doc["groups"]:
        assert group["name"]
        assert group["rules"], group["name"]
        rules.extend(group["rules"])
    return rules


def test_alert_rules_well_formed() -> None:
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert rule["alert"] and isinstance(rule["expr"], str) and rule["expr"].strip()
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]


def test_alerts_cover_the_metrics() -> None:
    exprs = "\n".join(r["expr"] for r in _alert_rules())
    for needle in (
        "crm_consumer_lag",
        "crm_events_rejected_total",
        "crm_batch_apply_seconds_bucket",
        "crm_webhook_failures_total",
    ):
        assert needle in exprs, needle
    assert re.search(r"up\{[^}]*worker[^}]*\}\s*==\s*0", exprs)


# --- Grafana -------------------------------------------------------------------------------
def test_grafana_dashboard() -> None:
    with (DEPLOY / "grafana" / "dashboards" / "crm-tracker.json").open(encoding="utf-8") as f:
        dash = json.load(f)
    assert dash["title"] and dash["uid"]
    panels = dash["panels"]
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    exprs = []
    for panel in panels:
        assert panel["title"] and panel["type"], panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["refId"], panel["title"]
            exprs.append(target["expr"])
    text = "\n".join(exprs)
    for metric in (
        "crm_events_applied_total",
        "crm_events_rejected_total",
        "crm_consumer_lag",
        "crm_batch_apply_seconds_bucket",
        "crm_end_to_end_seconds_bucket",
        "crm_reminders_fired_total",
    ):
        assert metric in text, metric
    assert "histogram_quantile(0.99, sum by (le) (rate(crm_end_to_end_seconds_bucket" in text
    assert "histogram_quantile(0.50" in text


def test_grafana_provisioning() -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    ds = load_one(prov / "datasources" / "prometheus.yml")
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    dashboards = load_one(prov / "dashboards" / "dashboards.yml")
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    # the compose file mounts deploy/grafana/dashboards where the provider looks
    grafana = load_one(DEPLOY / "compose.yaml")["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts.get("./grafana/dashboards") == provider["options"]["path"]


# --- Kubernetes ----------------------------------------------------------------------------
def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_yaml(path)
    ]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _k8s_docs() if d["kind"] == kind}


def test_k8s_documents_have_identity() -> None:
    docs = _k8s_docs()
    assert docs
    for path, doc in docs:
        assert doc.get("apiVersion"), path.name
        assert doc.get("kind"), path.name
        assert doc.get("metadata", {}).get("name"), path.name


def test_kustomization_lists_existing_files() -> None:
    kust = load_one(K8S / "kustomization.yaml")
    resources = kust["resources"]
    assert resources
    for res in resources:
        assert (K8S / res).is_file(), res
    assert "secret.example.yaml" not in resources  # placeholders must never be applied
    listed = set(resources)
    for path in K8S.glob("*.yaml"):
        if path.name not in ("kustomization.yaml", "secret.example.yaml"):
            assert path.name in listed, f"{path.name} is not in kustomization.yaml"


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def test_k8s_workloads() -> None:
    deployments = _by_kind("Deployment")
    assert set(deployments) == {
        "crm-tracker-worker",
        "crm-tracker-scheduler",
        "crm-tracker-api",
    }
    workloads = [*deployments.values(), *_by_kind("Job").values()]
    for wl in workloads:
        spec = wl["spec"]
        if wl["kind"] == "Deployment":
            labels = spec["template"]["metadata"]["labels"]
            for key, value in spec["selector"]["matchLabels"].items():
                assert labels.get(key) == value, wl["metadata"]["name"]
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in _containers(wl):
            assert c["image"], wl["metadata"]["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"]
            refs = {next(iter(ref.values()))["name"] for ref in c["envFrom"]}
            assert refs == {"crm-tracker-config", "crm-tracker-secrets"}
    assert deployments["crm-tracker-worker"]["spec"]["replicas"] == 4
    assert deployments["crm-tracker-scheduler"]["spec"]["replicas"] == 1
    args = {name: _containers(d)[0]["args"] for name, d in deployments.items()}
    assert args == {
        "crm-tracker-worker": ["worker"],
        "crm-tracker-scheduler": ["scheduler"],
        "crm-tracker-api": ["api"],
    }
    (job,) = _by_kind("Job").values()
    assert _containers(job)[0]["args"] == ["db", "upgrade"]


def test_k8s_api_probes_and_service() -> None:
    api = _by_kind("Deployment")["crm-tracker-api"]
    (container,) = _containers(api)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # the pod's own readiness, not the pipeline's (see api/routes/health.py)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz/api"
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names["http"] == 8000
    (svc,) = _by_kind("Service").values()
    assert svc["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] in ("http", 8000)
    services = _by_kind("Service")
    assert not any("worker" in name for name in services)


def test_k8s_config_and_secret() -> None:
    (cm,) = _by_kind("ConfigMap").values()
    data = cm["data"]
    assert all(key.startswith("CRM_") for key in data)
    assert all(isinstance(v, str) for v in data.values())  # ConfigMap values are strings
    assert data["CRM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["CRM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["CRM_KAFKA_BOOTSTRAP"]
    secret_keys = {
        "CRM_AUTH_SECRET",
        "CRM_DATABASE_URL",
        "CRM_KAFKA_SASL_USERNAME",
        "CRM_KAFKA_SASL_PASSWORD",
    }
    assert not secret_keys & set(data), "credentials belong in the Secret"
    (secret,) = _by_kind("Secret").values()
    assert set(secret["stringData"]) == secret_keys
    assert all("REPLACE_ME" in v for v in secret["stringData"].values())


# --- the pieces agree with the code --------------------------------------------------------
# Read by the CLI before the settings exist (logging is configured first).
ENV_OUTSIDE_SETTINGS = {"CRM_LOG_LEVEL"}


def _settings_env() -> set[str]:
    from config import Settings

    return {"CRM_" + name.upper() for name in Settings.model_fields}


def _deploy_env() -> dict[str, set[str]]:
    """CRM_* variable → the files that set it."""
    found: dict[str, set[str]] = {}
    for path in [DEPLOY / "compose.yaml", *sorted(K8S.glob("*.yaml"))]:
        for name in re.findall(r"(?<!\{)\b(CRM_[A-Z0-9_]+)\s*[:=]", path.read_text()):
            found.setdefault(name, set()).add(_rel(path))
    return found


def test_every_configured_variable_is_a_setting() -> None:
    known = _settings_env() | ENV_OUTSIDE_SETTINGS
    env = _deploy_env()
    assert {"CRM_KAFKA_BOOTSTRAP", "CRM_METRICS_PORT", "CRM_READY_MAX_LAG"} <= set(env)
    unknown = {k: sorted(v) for k, v in env.items() if k not in known}
    assert not unknown, f"not in Settings: {unknown}"
    # names the README tells an operator to set exist too
    readme = (DEPLOY / "README.md").read_text()
    unknown = set(re.findall(r"\b(CRM_[A-Z0-9_]+)\b", readme)) - known - {"CRM_TRACKER_IMAGE"}
    assert not unknown, f"deploy/README.md names unknown settings: {sorted(unknown)}"


def _registered_metrics() -> set[str]:
    import importlib
    import pkgutil

    from prometheus_client import REGISTRY

    import api.routes.ops  # noqa: F401 - registers the API's gauges
    import scheduler
    import streams.lag
    import streams.metrics  # noqa: F401 - registers the worker metrics

    for mod in pkgutil.iter_modules(scheduler.__path__):
        importlib.import_module(f"scheduler.{mod.name}")
    return {m.name for m in REGISTRY.collect()}


def _referenced_metrics() -> set[str]:
    texts = [
        (DEPLOY / "prometheus" / "alerts.yml").read_text(),
        (DEPLOY / "grafana" / "dashboards" / "crm-tracker.json").read_text(),
    ]
    names = set()
    for text in texts:
        for name in re.findall(r"\b(crm_[a-z0-9_]+)", text):
            names.add(re.sub(r"_(bucket|sum|count|total|created)$", "", name))
    return names


def test_every_referenced_metric_exists_in_the_code() -> None:
    referenced = _referenced_metrics()
    assert {"crm_consumer_lag", "crm_events_applied", "crm_end_to_end_seconds"} <= referenced
    missing = referenced - _registered_metrics()
    assert not missing, f"alerts/dashboard use metrics no code exports: {sorted(missing)}"


def test_every_command_exists_in_the_cli() -> None:
    from crmtracker.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)
    used = [
        _command(svc)
        for name, svc in load_one(DEPLOY / "compose.yaml")["services"].items()
        if "build" in svc
    ]
    used += [
        _containers(d)[0]["args"] for _, d in _k8s_docs() if d["kind"] in ("Deployment", "Job")
    ]
    assert used
    for cmd in used:
        assert cmd[0] in commands, cmd
    assert {"lag", "worker", "api", "db"} <= set(sub.choices)  # type: ignore[arg-type]


# --- external validators, where installed ---------------------------------------------------
def _tool(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus / kubectl)")
    return path


def _run(*cmd: str) -> str:
    import subprocess

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=DEPLOY)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_promtool_checks_config_and_rules() -> None:
    promtool = _tool("promtool")
    _run(promtool, "check", "config", "prometheus/prometheus.yml")
    _run(promtool, "check", "rules", "prometheus/alerts.yml")


def test_promtool_unit_tests_of_the_alerts() -> None:
    out = _run(_tool("promtool"), "test", "rules", "prometheus/alerts.test.yml")
    assert "SUCCESS" in out


def test_kustomize_renders_the_manifests() -> None:
    out = _run(_tool("kubectl"), "kustomize", "k8s")
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ConfigMap", "Service", "Job"} <= kinds
    assert all(d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace")


def test_k8s_disruption_budgets_select_existing_workloads() -> None:
    budgets = _by_kind("PodDisruptionBudget")
    deployments = _by_kind("Deployment")
    assert set(budgets) == {"crm-tracker-worker", "crm-tracker-api"}
    for name, pdb in budgets.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"]
    assert budgets["crm-tracker-worker"]["spec"]["maxUnavailable"] == 1
    assert (
        budgets["crm-tracker-api"]["spec"]["minAvailable"]
        < deployments["crm-tracker-api"]["spec"]["replicas"]
    )
