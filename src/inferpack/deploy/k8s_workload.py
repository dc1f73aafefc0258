"""The Kubernetes objects of one planned server: Deployment, Service, PodDisruptionBudget.

Pure builders (ServerSpec → dicts); :mod:`inferpack.deploy.kubernetes` adds the routing and
writes the files. Each server becomes:

- a Deployment of one replica on its planned instance type (nodeSelector), running exactly
  ``spec.argv()``, the command the local target runs;
- a ClusterIP Service with the REST ``http`` and gRPC ``grpc`` ports;
- a PodDisruptionBudget of ``maxUnavailable: 1``, which never blocks a node drain (a
  single-replica budget that forbade every eviction would stall cluster upgrades), and
  which is the pod's only budget: the eviction API refuses pods matched by two.

The constants below give each resource figure with its reason; docs/deploy-kubernetes.md
has the long form.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferpack.deploy.spec import ServerSpec, dns_label
from inferpack.errors import ConfigError

Manifest = dict[str, Any]

APP_NAME = "inferpack"
MODEL_LABEL_PREFIX = "model.inferpack.dev/"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# Extended resources of the NVIDIA and AWS Neuron device plugins. aws.amazon.com/neuron
# counts Inferentia devices (4 NeuronCores each on inf1), which is what the catalogue's
# accelerator_count holds; aws.amazon.com/neuroncore would count cores instead.
DEVICE_RESOURCES = {"cuda": "nvidia.com/gpu", "neuron": "aws.amazon.com/neuron"}
# Optional Secrets: S3 credentials as AWS_* variables, and the repository API token.
S3_SECRET = "inferpack-s3"
TOKEN_SECRET = "inferpack-repository-token"
TOKEN_ENV = "INFERPACK_REPOSITORY_API_TOKEN"
# readOnlyRootFilesystem: the artifact cache ($XDG_CACHE_HOME/inferpack) and temp files
# live on emptyDirs. The cache root is the folder the server creates (0700) inside the
# mount, so the emptyDir's own 0777 mode never meets the cache's ownership check.
CACHE_MOUNT = "/cache"
TMP_MOUNT = "/tmp"
RUN_AS_UID = 10001  # the user the Dockerfiles create
# The kubelet, the container runtime and node daemons (CNI, kube-proxy, log agents) need
# about a core; requesting vcpu - 1 keeps the pod schedulable on the instance it was
# planned for. The limit is the whole instance: a CPU limit below it would only add CFS
# throttling to tail latency.
SYSTEM_RESERVED_MILLICPU = 1000
MIN_CPU_REQUEST_MILLICPU = 500
# Memory the node keeps for itself (kube-reserved and eviction threshold): 10 %, 1 GiB at
# least. The limit stops at the rest, so the kernel OOM-kills this pod, not the node agents.
SYSTEM_RESERVED_MEMORY_SHARE = 0.10
MIN_SYSTEM_RESERVED_MEMORY_MB = 1024
# Shutdown: the preStop sleep lets endpoint removal reach every proxy before SIGTERM; the
# server then drains in-flight requests (up to 10 s, server/app.py SHUTDOWN_TIMEOUT_S).
PRESTOP_SLEEP_S = 5
TERMINATION_GRACE_S = 30
# Start-up: a server is ready once it fetched and loaded every model. Budget 5 minutes,
# plus 30 s per model for object-store downloads and weight loading, before a restart.
STARTUP_PERIOD_S = 10
STARTUP_BASE_S = 300
STARTUP_PER_MODEL_S = 30


@dataclass(frozen=True)
class ManifestConfig:
    """What the manifests take beyond the specs: the image, the namespace, the plan name."""

    image: str
    namespace: str | None = None
    plan_name: str = APP_NAME
    max_replicas: int = 4  # HorizontalPodAutoscaler ceiling per server Deployment
    inflight_per_pod: int = 16  # its target: requests in flight per pod


# The server's gauge the autoscalers read (runtime/metrics.py), per pod via prometheus-adapter.
INFLIGHT_METRIC = "inferpack_inflight_requests"

# ---------------------------------------------------------------- names and labels


def _model_slug(model: str, limit: int) -> str:
    """A DNS-label form of a model name within ``limit`` characters; a name that had to be
    changed gets a hash suffix, so two names never meet on one slug."""
    plain = dns_label(model)
    if plain == model and len(plain) <= limit:
        return plain
    digest = hashlib.sha256(model.encode()).hexdigest()[:10]
    return f"{plain[: limit - len(digest) - 1].rstrip('-')}-{digest}"


def model_label(model: str) -> str:
    """The pod label key marking a pod as a host of ``model`` (name part ≤ 63 chars)."""
    return MODEL_LABEL_PREFIX + _model_slug(model, 63)


def model_service_name(model: str) -> str:
    """The Service of a replicated model; starts with a letter (DNS-1035) by its prefix."""
    return "model-" + _model_slug(model, 57)


def server_service_name(spec: ServerSpec) -> str:
    """Service names must start with a letter (DNS-1035); server names may not."""
    return spec.name if spec.name[0].isalpha() else f"s-{spec.name}"[:63].rstrip("-")


def selector_labels(spec: ServerSpec) -> dict[str, str]:
    """The labels a server's Deployment, Service and budget select its pod by."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": spec.name}


def server_labels(spec: ServerSpec, config: ManifestConfig) -> dict[str, str]:
    return {
        **selector_labels(spec),
        "app.kubernetes.io/part-of": dns_label(config.plan_name),
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": APP_NAME,
    }


def object_metadata(name: str, labels: Mapping[str, str], config: ManifestConfig) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if config.namespace:
        metadata["namespace"] = config.namespace
    metadata["labels"] = dict(labels)
    return metadata


# ---------------------------------------------------------------- one server


def resources(spec: ServerSpec) -> dict[str, dict[str, str]]:
    """Requests and limits of a server's container (the constants above say why)."""
    cpu_request = max(spec.vcpu * 1000 - SYSTEM_RESERVED_MILLICPU, MIN_CPU_REQUEST_MILLICPU)
    reserved_mb = max(
        spec.instance_memory_mb * SYSTEM_RESERVED_MEMORY_SHARE, MIN_SYSTEM_RESERVED_MEMORY_MB
    )
    memory_limit = math.floor(spec.instance_memory_mb - reserved_mb)
    if spec.memory_request_mb > memory_limit:
        raise ConfigError(
            [
                f"server {spec.name}: needs {spec.memory_request_mb} MiB but a "
                f"{spec.instance_type} leaves {memory_limit} MiB to pods"
            ]
        )
    requests = {"cpu": f"{cpu_request}m", "memory": f"{spec.memory_request_mb}Mi"}
    limits = {"cpu": str(spec.vcpu), "memory": f"{memory_limit}Mi"}
    device = DEVICE_RESOURCES.get(spec.device)
    if device and spec.accelerator_count:
        requests[device] = limits[device] = str(spec.accelerator_count)
    return {"requests": requests, "limits": limits}


def tolerations(spec: ServerSpec) -> list[dict[str, str]]:
    """GPU and Inferentia node groups are tainted so other pods stay off them."""
    device = DEVICE_RESOURCES.get(spec.device)
    if device is None:
        return []
    return [{"key": device, "operator": "Exists", "effect": "NoSchedule"}]


def _probe(path: str, period_s: int, timeout_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


def probes(spec: ServerSpec) -> dict[str, dict[str, Any]]:
    """Start-up waits for every model (ready); then readiness takes a busy or draining pod
    out of the Service fast, and liveness restarts only one stuck for a minute."""
    startup_s = STARTUP_BASE_S + STARTUP_PER_MODEL_S * len(spec.models)
    return {
        "startupProbe": _probe(
            "/v2/health/ready", STARTUP_PERIOD_S, 5, math.ceil(startup_s / STARTUP_PERIOD_S)
        ),
        "readinessProbe": _probe("/v2/health/ready", 5, 3, 2),
        "livenessProbe": _probe("/v2/health/live", 10, 5, 6),
    }


def _env() -> list[dict[str, Any]]:
    token = {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token", "optional": True}}
    return [
        {"name": "XDG_CACHE_HOME", "value": CACHE_MOUNT},
        {"name": "HOME", "value": TMP_MOUNT},
        {"name": TOKEN_ENV, "valueFrom": token},
    ]


def container(spec: ServerSpec, config: ManifestConfig) -> dict[str, Any]:
    """The server container: ``command + args == spec.argv()``, nothing added."""
    argv = spec.argv()
    return {
        "name": "server",
        "image": config.image,
        "command": argv[:1],
        "args": argv[1:],
        "ports": [
            {"name": "http", "containerPort": spec.http_port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": spec.grpc_port, "protocol": "TCP"},
        ],
        "env": _env(),
        "envFrom": [{"secretRef": {"name": S3_SECRET, "optional": True}}],
        "resources": resources(spec),
        **probes(spec),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "cache", "mountPath": CACHE_MOUNT},
            {"name": "tmp", "mountPath": TMP_MOUNT},
        ],
    }


def _pod_labels(
    spec: ServerSpec, config: ManifestConfig, replicated: Iterable[str]
) -> dict[str, str]:
    labels = server_labels(spec, config)
    for model in sorted(set(spec.models) & set(replicated)):
        labels[model_label(model)] = "true"
    return labels


def pod_spec(spec: ServerSpec, config: ManifestConfig) -> dict[str, Any]:
    """The pod: on its planned instance type, unprivileged, with its scratch volumes."""
    pod: dict[str, Any] = {
        "nodeSelector": {INSTANCE_TYPE_LABEL: spec.instance_type},
        "tolerations": tolerations(spec),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # one env var per Service would flood big fleets
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_UID,
            "runAsGroup": RUN_AS_UID,
            "fsGroup": RUN_AS_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container(spec, config)],
        "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    if not pod["tolerations"]:
        del pod["tolerations"]
    return pod


def deployment(
    spec: ServerSpec, config: ManifestConfig, replicated: Iterable[str] = ()
) -> Manifest:
    """One pod to start with, more from its HorizontalPodAutoscaler. Rolling updates surge
    one pod and keep the old one until the new is ready (that needs room for a second node
    of the type)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(spec.name, server_labels(spec, config), config),
        "spec": {
            # No replicas: the HorizontalPodAutoscaler owns the count (minimum 1).
            "selector": {"matchLabels": selector_labels(spec)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": _pod_labels(spec, config, replicated)},
                "spec": pod_spec(spec, config),
            },
        },
    }


def service_ports(spec: ServerSpec) -> list[dict[str, Any]]:
    """gRPC is HTTP/2 without TLS: ``kubernetes.io/h2c`` tells proxies and gateways so."""
    return [
        {"name": "http", "port": spec.http_port, "targetPort": "http", "protocol": "TCP",
         "appProtocol": "http"},
        {"name": "grpc", "port": spec.grpc_port, "targetPort": "grpc", "protocol": "TCP",
         "appProtocol": "kubernetes.io/h2c"},
    ]  # fmt: skip


def service(spec: ServerSpec, config: ManifestConfig) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(server_service_name(spec), server_labels(spec, config), config),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec),
            "ports": service_ports(spec),
        },
    }


def autoscaler(spec: ServerSpec, config: ManifestConfig) -> Manifest:
    """autoscaling/v2 on the pods' requests in flight (``inferpack_inflight_requests``,
    summed over a pod's models: a Pods metric served by prometheus-adapter with the rule in
    docs/deploy-kubernetes.md). From the planned replica up to ``config.max_replicas``;
    scale-down waits 5 minutes of lower load, so the fleet does not flap."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_metadata(spec.name, server_labels(spec, config), config),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": 1,
            "maxReplicas": config.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": INFLIGHT_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(config.inflight_per_pod),
                        },
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def disruption_budget(spec: ServerSpec, config: ManifestConfig) -> Manifest:
    """maxUnavailable 1: drains always proceed (module docstring); an unhealthy pod may
    always be evicted, so a crash-looping server never holds a node."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(spec.name, server_labels(spec, config), config),
        "spec": {
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector_labels(spec)},
        },
    }
