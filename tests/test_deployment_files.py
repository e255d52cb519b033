"""The deployment examples in config/deploy/ (Docker Compose, Kubernetes), checked statically: no
Docker engine or cluster is needed to run the suite. What each rule protects: the gateways read a
config that exists in the image and passes check-config on shared backends only (several
processes); the service names the config expects are the ones the manifests define; the Redis
nodes are cluster nodes that the init job joins; images are pinned; probes hit the public /health."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import GatewayConfig, load_config
from gateway.workers import embedded_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "config" / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def kubernetes() -> dict[tuple[str, str], dict]:
    documents = [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}


def gateway_config(path_in_image: str, monkeypatch, **env: str) -> GatewayConfig:
    # The Dockerfile copies config/ to /app/config: the file must be in the repository's config/.
    assert path_in_image.startswith("/app/config/")
    monkeypatch.setenv("MNX_API_KEY", "mnx_live_example_key")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_config(ROOT / "config" / path_in_image.removeprefix("/app/config/"))


def workers_argument(command: list[str]) -> int:
    return int(command[command.index("--workers") + 1]) if "--workers" in command else 1


def test_compose_gateways_run_on_the_cluster_config_and_may_have_several_workers(monkeypatch):
    services = compose()["services"]
    gateway = services["gateway"]
    env = gateway["environment"]
    config = gateway_config(env["MNX_GATEWAY_CONFIG"], monkeypatch, MNX_REDIS_URL=env["MNX_REDIS_URL"],
                            QDRANT_URL=env["QDRANT_URL"])
    assert config.storage.backend == "redis" and config.storage.redis.cluster
    assert config.memory.vectors.backend == "qdrant"
    # Several gateways (replicas x workers) are only allowed on shared backends.
    assert gateway["deploy"]["replicas"] > 1 and embedded_settings(config) == []
    assert workers_argument(gateway["command"]) >= 1
    # The hosts the config points at are services of this file.
    assert urlsplit(config.storage.redis.url).hostname in services
    assert config.memory.vectors.qdrant is not None
    assert urlsplit(config.memory.vectors.qdrant.url).hostname in services
    assert gateway["build"]["context"] == "../.." and (DEPLOY / "../.." / gateway["build"]["dockerfile"]).is_file()


def test_compose_redis_nodes_are_cluster_nodes_the_init_job_joins():
    services = compose()["services"]
    nodes = sorted(name for name in services if re.fullmatch(r"redis-\d+", name))
    assert len(nodes) >= 3, "a Redis Cluster needs three masters"
    for name in nodes:
        command = services[name]["command"]
        assert "--cluster-enabled yes" in command and "--cluster-preferred-endpoint-type hostname" in command
        assert services[name]["environment"]["NODE_NAME"] == name  # what the node announces
    init = services["redis-cluster-init"]
    script = "\n".join(init["command"])
    assert "--cluster create" in script and f"for n in {' '.join(nodes)};" in script
    assert set(init["depends_on"]) == set(nodes)
    assert services["gateway"]["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"


def images() -> list[str]:
    found = [service["image"] for service in compose()["services"].values() if "image" in service]
    for doc in kubernetes().values():
        spec = doc["spec"].get("template", {}).get("spec", {})
        found += [container["image"] for container in spec.get("containers", [])]
    return found


@pytest.mark.parametrize("image", sorted(set(images())))
def test_every_image_is_pinned_to_a_release(image):
    name, _, tag = image.partition(":")
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{image}: pin a release tag, not {tag or 'latest'}"


def test_kubernetes_gateways_find_the_services_the_manifest_defines(monkeypatch):
    objects = kubernetes()
    deployment = objects[("Deployment", "mnx-gateway")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["env"][[item["name"] for item in container["env"]].index("MNX_API_KEY")]["valueFrom"][
        "secretKeyRef"], "the project key comes from a Secret, not the manifest"
    config = gateway_config(env["MNX_GATEWAY_CONFIG"], monkeypatch, MNX_REDIS_URL=env["MNX_REDIS_URL"],
                            QDRANT_URL=env["QDRANT_URL"])
    assert config.storage.redis.cluster and embedded_settings(config) == []
    assert deployment["spec"]["replicas"] > 1
    # redis-0.redis: pod 0 of the StatefulSet "redis" under its headless Service "redis".
    pod, _, service = urlsplit(config.storage.redis.url).hostname.partition(".")
    redis_set = objects[("StatefulSet", "redis")]
    assert redis_set["spec"]["serviceName"] == service and objects[("Service", service)]["spec"]["clusterIP"] == "None"
    assert pod == "redis-0" and redis_set["spec"]["replicas"] >= 3
    init = objects[("Job", "redis-cluster-init")]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "for n in " + " ".join(f"redis-{i}" for i in range(redis_set["spec"]["replicas"])) + ";" in init
    assert config.memory.vectors.qdrant is not None
    assert ("Service", urlsplit(config.memory.vectors.qdrant.url).hostname) in objects
    # Probes on the port the config listens on, at /health, which answers without a key.
    assert container["ports"][0]["containerPort"] == config.server.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > config.server.shutdown_timeout_seconds, "Kubernetes would kill a gateway still finishing turns"
