"""The deployment files, checked without a cluster or a container engine: every manifest parses;
every variable they set is a setting; probes, ports and the metrics path are the worker's and the
ingest tier's; the autoscalers stay within bounds (the workers within the partitions, the ingest
tier on CPU); the PrometheusRule is the alert file; the Dockerfile passes hadolint, installs the
project as ``make install`` does and runs either process type."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from app.ops.access import PUBLIC_PATHS
from app.settings import PREFIX, Settings, load
from deploy.prometheus_rule import ALERTS, prometheus_rule

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
SETTINGS = {PREFIX + name.upper() for name in Settings.model_fields}


def manifests() -> dict[str, dict]:
    """Each manifest by its kind ("Deployment": the workers'), the ingest tier's by kind/name
    ("Deployment/rowstream-ingest")."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] and document["kind"], path
            name = document.get("metadata", {}).get("name", "rowstream")
            ingest_tier = name == "rowstream-ingest"
            found[f"{document['kind']}/{name}" if ingest_tier else document["kind"]] = document
    return found


def worker() -> dict:
    return manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def ingest() -> dict:
    return manifests()["Deployment/rowstream-ingest"]["spec"]["template"]["spec"]["containers"][0]


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: command.split() for name, _, command in (line.partition(": ") for line in lines)}


def test_every_manifest_parses_and_the_kustomization_lists_them_all():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(manifests()) >= {
        "ConfigMap", "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget",
        "ScaledObject", "ServiceMonitor", "PrometheusRule", "Deployment/rowstream-ingest",
        "Service/rowstream-ingest", "HorizontalPodAutoscaler/rowstream-ingest",
        "ServiceMonitor/rowstream-ingest",
    }  # fmt: skip


def test_every_variable_set_is_a_setting_and_the_config_loads(tmp_path):
    kinds = manifests()
    config = kinds["ConfigMap"]["data"]
    secret = {k: v for k, v in kinds["Secret"]["stringData"].items() if k.startswith(PREFIX)}
    set_here = set(config) | set(secret)
    for container in (
        worker(), ingest(), kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    ):  # fmt: skip
        set_here |= {env["name"] for env in container.get("env", [])}
    assert set_here <= SETTINGS, set_here - SETTINGS
    dockerfile_env = set(re.findall(r"\b(ROWSTREAM_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    assert dockerfile_env <= SETTINGS
    mounted = worker()["volumeMounts"][0]["mountPath"]
    assert config["ROWSTREAM_BROKER_SASL_PASSWORD_FILE"].startswith(mounted + "/")
    password = tmp_path / "kafka-password"  # the mounted secret, here
    password.write_text(kinds["Secret"]["stringData"]["kafka-password"] + "\n")
    settings = load({**config, **secret, "ROWSTREAM_BROKER_SASL_PASSWORD_FILE": str(password)})
    assert settings.partitions == 720 and settings.web_bind == settings.ingest_bind == "0.0.0.0"
    assert settings.broker_tls and settings.broker_sasl_mechanism == "SCRAM-SHA-512"


def test_probes_ports_and_metrics_are_the_workers():
    container = worker()
    [port] = container["ports"]
    assert port["containerPort"] == Settings.model_fields["web_port"].default == 6066
    assert manifests()["ConfigMap"]["data"]["ROWSTREAM_WEB_PORT"] == str(port["containerPort"])
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert readiness["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert {"/healthz", "/readyz", "/metrics"} <= PUBLIC_PATHS  # probes and Prometheus need no key
    service = manifests()["Service"]["spec"]
    assert service["ports"][0]["targetPort"] == port["name"]
    [endpoint] = manifests()["ServiceMonitor"]["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (service["ports"][0]["name"], "/metrics")
    selector = manifests()["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= manifests()["Service"]["metadata"]["labels"].items()
    assert container["command"] == procfile()["worker"] == ["faust", "-A", "app", "worker"]


def test_the_ingest_tier_is_the_apis_service_with_its_probes_and_cpu_autoscaling():
    container = ingest()
    [port] = container["ports"]
    assert port["containerPort"] == Settings.model_fields["ingest_port"].default == 6067
    assert manifests()["ConfigMap"]["data"]["ROWSTREAM_INGEST_PORT"] == str(port["containerPort"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    # the Procfile's web: command, one process per pod (the autoscaler adds pods)
    assert container["command"] == [*procfile()["web"], "--processes", "1"]
    assert procfile()["web"] == ["faust", "-A", "app", "ingest"]
    service = manifests()["Service/rowstream-ingest"]["spec"]
    assert service["ports"][0]["targetPort"] == port["name"]
    pods = manifests()["Deployment/rowstream-ingest"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pods.items()
    assert pods["app.kubernetes.io/component"] == "ingest"  # not the workers' Service
    monitor = manifests()["ServiceMonitor/rowstream-ingest"]["spec"]
    assert monitor["endpoints"][0]["path"] == "/metrics"
    assert monitor["selector"]["matchLabels"].items() <= service["selector"].items()
    hpa = manifests()["HorizontalPodAutoscaler/rowstream-ingest"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "rowstream-ingest"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert container["resources"]["requests"]["cpu"]  # what CPU utilisation is measured against


def test_resources_grace_and_autoscaling_bounds():
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    resources = worker()["resources"]

    def mebibytes(text: str) -> int:
        return int(text.removesuffix("Mi"))

    # make bench: 144 MB RSS under load at 720 partitions; room for bursts and the GC.
    assert mebibytes(resources["requests"]["memory"]) >= 1.5 * 144
    assert mebibytes(resources["limits"]["memory"]) >= 2 * mebibytes(
        resources["requests"]["memory"]
    )
    session = float(manifests()["ConfigMap"]["data"]["ROWSTREAM_SESSION_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > session  # a stop finishes before a kill
    scaled = manifests()["ScaledObject"]["spec"]
    internal = int(manifests()["ConfigMap"]["data"]["ROWSTREAM_INTERNAL_PARTITIONS"])
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= internal
    assert scaled["scaleTargetRef"]["name"] == manifests()["Deployment"]["metadata"]["name"]
    queries = [t["metadata"]["query"] for t in scaled["triggers"]]
    assert any("rowstream_time_lag_seconds" in q for q in queries)
    job = manifests()["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["faust", "-A", "app", "create-topics"]


def test_the_prometheus_rule_is_the_alert_file():
    on_file = yaml.safe_load((K8S / "prometheusrule.yaml").read_text())
    assert on_file == prometheus_rule()
    assert on_file["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_the_dockerfile_passes_hadolint_and_installs_like_make_install():
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "$(PY) -m pip install --quiet -e '.[test]'" in makefile and "VENV   ?= .venv" in makefile
    assert "python -m venv .venv" in dockerfile
    assert ".venv/bin/python -m pip install --no-cache-dir --quiet -e ." in dockerfile
    assert 'CMD ["faust", "-A", "app", "worker"]' in dockerfile
    assert re.search(r"^EXPOSE 6066 6067$", dockerfile, re.M) and re.search(
        r"^USER 10001$", dockerfile, re.M
    )
