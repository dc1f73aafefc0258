"""``inferpack controller``: deploy --follow's loop inside a Kubernetes cluster.

Every ``interval_s`` (one process, no event loop: a blocking loop is all it needs):

    observe   each server's pods (listed by the fleet's labels, ready ones) answer
              GET /v2/models/stats; a model's successful inferences summed over the pods,
              differenced against the last interval, over the seconds between: its rate
              (a pod that restarted counts from 0: its whole count is new)
    smooth    as deploy --follow (deploy/follow.py): rising demand at once, falling once
              two intervals agree
    re-plan   plan --previous from the plan in effect, kept in a ConfigMap so a restarted
              controller resumes from it (the first run takes --plan)
    roll out  the order of deploy --previous (k8s_rollout.py) through the API: apply step
              1, wait until the added and growing Deployments rolled out, apply step 2,
              apply the new plan, wait for the shrinking ones, delete the removed servers'
              objects; then store the new plan in the ConfigMap

Objects are written by server-side apply (field manager ``inferpack``), so the same call
creates or updates. The controller's Role is limited to its namespace
(:func:`controller_manifests`). A roll-out that does not finish in ``rollout_timeout_s``
stops the step with an error naming the Deployment; the plan in the ConfigMap stays the
old one and the next interval starts from it.
"""

from __future__ import annotations

import importlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from inferpack.deploy.follow import smoothed
from inferpack.deploy.k8s_rollout import STEPS, rollout_of, step_manifests
from inferpack.deploy.k8s_workload import APP_NAME, Manifest, ManifestConfig
from inferpack.deploy.kubernetes import build_manifests
from inferpack.deploy.spec import ServerSpec, Shapes, dns_label, server_specs
from inferpack.errors import InferpackError, MissingExtraError, UnavailableError
from inferpack.plan.formats import Plan, Profile, parse_plan, plan_to_dict
from inferpack.plan.incremental import replan
from inferpack.plan.problem import PlanOptions, ServerType

FIELD_MANAGER = APP_NAME
PLAN_KEY = "plan.yaml"
ROLLOUT_TIMEOUT_S = 900.0
POLL_S = 2.0
STATS_TIMEOUT_S = 5.0
API_TIMEOUT_S = 30.0
Log = Callable[[str], None]


class Cluster(Protocol):
    """What the controller needs of the Kubernetes API (KubeCluster; a fake in tests)."""

    def apply(self, manifest: Manifest) -> None: ...

    def delete(self, manifest: Manifest) -> None: ...

    def rolled_out(self, deployment: str) -> bool: ...

    def pod_addresses(self, server: str) -> list[str]: ...  # "ip:port" of ready pods

    def read_plan(self) -> str | None: ...

    def write_plan(self, text: str) -> None: ...


# kind -> (client API class name, the method suffix of its namespaced calls)
_APIS = {
    "Deployment": ("AppsV1Api", "namespaced_deployment"),
    "Service": ("CoreV1Api", "namespaced_service"),
    "PodDisruptionBudget": ("PolicyV1Api", "namespaced_pod_disruption_budget"),
    "HorizontalPodAutoscaler": ("AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
    "Ingress": ("NetworkingV1Api", "namespaced_ingress"),
    "ConfigMap": ("CoreV1Api", "namespaced_config_map"),
}


class KubeCluster:
    """The API through the official kubernetes client (the ``kubernetes`` extra): in a pod,
    its service account; elsewhere ``kubeconfig`` (or the default one)."""

    def __init__(self, namespace: str, fleet: str, kubeconfig: str | None = None) -> None:
        try:
            kube: Any = importlib.import_module("kubernetes")
        except ImportError as error:
            raise MissingExtraError("kubernetes", "kubernetes") from error
        if kubeconfig is not None:
            kube.config.load_kube_config(config_file=kubeconfig)
        else:
            try:
                kube.config.load_incluster_config()
            except kube.config.ConfigException:
                kube.config.load_kube_config()
        self._client = kube.client
        self._error = kube.client.exceptions.ApiException
        self.namespace = namespace
        self.fleet = fleet
        self._apis: dict[str, Any] = {}

    def _api(self, name: str) -> Any:
        api = self._apis.get(name)
        if api is None:
            api = self._apis[name] = getattr(self._client, name)()
        return api

    def _send(self, method: Any, what: str, **kwargs: Any) -> tuple[int, Any]:
        """(status, JSON body) of one call; 404 is an answer, other failures raise."""
        try:
            answer = method(
                namespace=self.namespace,
                _preload_content=False,
                _request_timeout=API_TIMEOUT_S,
                **kwargs,
            )
            status, data = answer.status, answer.data
        except self._error as error:
            status, data = error.status, (error.body or "").encode()
        except Exception as error:  # the connection (urllib3): refused, reset, timed out
            raise UnavailableError(f"kubernetes API: {what}: {error}") from None
        if status >= 400 and status != 404:
            text = data.decode(errors="replace")[:300]
            raise UnavailableError(f"kubernetes API: {what}: {status} {text}")
        return status, json.loads(data or b"{}")

    def _call(self, kind: str, verb: str, name: str, **kwargs: Any) -> tuple[int, Any]:
        api_name, suffix = _APIS[kind]
        method = getattr(self._api(api_name), f"{verb}_{suffix}")
        return self._send(method, f"{verb} {kind} {name}", name=name, **kwargs)

    def apply(self, manifest: Manifest) -> None:
        name = manifest["metadata"]["name"]
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        status, _ = self._call(
            manifest["kind"], "patch", name, body=body, field_manager=FIELD_MANAGER,
            force=True, _content_type="application/apply-patch+yaml",
        )  # fmt: skip
        if status == 404:
            raise UnavailableError(f"kubernetes API: apply {manifest['kind']} {name}: 404")

    def delete(self, manifest: Manifest) -> None:
        self._call(manifest["kind"], "delete", manifest["metadata"]["name"])  # 404: gone

    def rolled_out(self, deployment: str) -> bool:
        status, found = self._call("Deployment", "read", deployment)
        return status == 200 and rolled_out(found)

    def pod_addresses(self, server: str) -> list[str]:
        selector = f"app.kubernetes.io/name={APP_NAME},app.kubernetes.io/instance={server}"
        method = self._api("CoreV1Api").list_namespaced_pod
        _, found = self._send(method, f"list pods of {server}", label_selector=selector)
        return pod_addresses(found)

    def read_plan(self) -> str | None:
        status, found = self._call("ConfigMap", "read", plan_config_map(self.fleet))
        text = (found.get("data") or {}).get(PLAN_KEY) if status == 200 else None
        return text if isinstance(text, str) else None

    def write_plan(self, text: str) -> None:
        self.apply(plan_config_map_manifest(self.fleet, text))


def rolled_out(deployment: Manifest) -> bool:
    """``kubectl rollout status``'s test: the controller saw the latest spec, every replica
    is updated and available, and no old one is left."""
    status = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    return bool(
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) >= wanted
        and status.get("availableReplicas", 0) >= wanted
        and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
    )


def pod_addresses(pod_list: Manifest) -> list[str]:
    """``ip:port`` (the container port named http) of each ready pod in a PodList."""
    found = []
    for pod in pod_list.get("items") or []:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        ports = [
            port.get("containerPort")
            for container in (pod.get("spec") or {}).get("containers") or []
            for port in container.get("ports") or []
            if port.get("name") == "http"
        ]
        if ready and status.get("podIP") and ports:
            found.append(f"{status['podIP']}:{ports[0]}")
    return found


def plan_config_map(fleet: str) -> str:
    return dns_label(f"{fleet}-plan")


def plan_config_map_manifest(fleet: str, text: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plan_config_map(fleet),
            "labels": {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/part-of": fleet},
        },
        "data": {PLAN_KEY: text},
    }


def model_counts(stats: Manifest) -> dict[str, int]:
    """Model name → successful inferences, from a /v2/models/stats answer (all versions)."""
    counts: dict[str, int] = {}
    for row in stats.get("model_stats") or []:
        success = ((row.get("inference_stats") or {}).get("success") or {}).get("count", 0)
        counts[row["name"]] = counts.get(row["name"], 0) + int(success)
    return counts


def fetch_stats(address: str) -> Manifest:
    url = f"http://{address}/v2/models/stats"
    with urllib.request.urlopen(url, timeout=STATS_TIMEOUT_S) as answer:
        document: Manifest = json.load(answer)
    return document


@dataclass
class ClusterController:
    """The loop of the module docstring for one fleet in one namespace."""

    cluster: Cluster
    manifests: ManifestConfig
    profiles: tuple[Profile, ...]
    types: tuple[ServerType, ...]
    options: PlanOptions
    shapes: Shapes
    model_repository: str
    headroom: float = 0.2
    max_moves: int | None = None
    rollout_timeout_s: float = ROLLOUT_TIMEOUT_S
    poll_s: float = POLL_S
    log: Log = print
    fetch: Callable[[str], Manifest] = fetch_stats
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # (model, pod address) -> count at the last observation, and when
    _counts: dict[tuple[str, str], int] = field(default_factory=dict)
    _observed_at: float | None = None
    _previous_rates: dict[str, float] = field(default_factory=dict)

    def plan(self, initial: Plan) -> Plan:
        """The plan in effect: the ConfigMap's, else ``initial`` (stored there)."""
        text = self.cluster.read_plan()
        if text is not None:
            return parse_plan(yaml.safe_load(text), plan_config_map(self.manifests.plan_name))
        self.cluster.write_plan(yaml.safe_dump(plan_to_dict(initial), sort_keys=False))
        return initial

    def specs(self, plan: Plan) -> list[ServerSpec]:
        return server_specs(plan, self.model_repository, self.shapes)

    def observe(self, plan: Plan) -> dict[str, float] | None:
        """Each model's rate since the last observation (None the first time: counts only
        start there). Pods that do not answer are left out of this interval."""
        now = self.clock()
        before, since = self._counts, self._observed_at
        counts: dict[tuple[str, str], int] = {}
        silent: set[str] = set()
        for spec in self.specs(plan):
            for address in self.cluster.pod_addresses(spec.name):
                try:
                    for model, count in model_counts(self.fetch(address)).items():
                        counts[(model, address)] = count
                except (OSError, ValueError) as error:
                    silent.add(address)
                    self.log(f"stats of {spec.name} at {address} not read: {error}")
        # A pod that did not answer keeps its last counts: read next time, its requests
        # since then count once (not as a new pod's whole history).
        counts.update({key: n for key, n in before.items() if key[1] in silent})
        self._counts, self._observed_at = counts, now
        if since is None or now <= since:
            return None
        rates: dict[str, float] = {}
        for (model, address), count in counts.items():
            if address in silent:
                continue
            earlier = before.get((model, address), 0)
            new = count - earlier if count >= earlier else count  # a restarted pod
            rates[model] = rates.get(model, 0.0) + new / (now - since)
        return rates

    def step(self, plan: Plan) -> Plan:
        """One observe → re-plan → roll out; the plan in effect afterwards."""
        observed = self.observe(plan)
        if observed is None:
            self.log("first observation: counting starts now")
            return plan
        kinds = {m.name: m.kind for s in plan.servers for m in s.models}
        demand, self._previous_rates = smoothed(kinds, observed, self._previous_rates)
        new = replan(
            plan, self.profiles, demand, self.types, self.options,
            headroom=self.headroom, max_moves=self.max_moves,
        )  # fmt: skip
        assert new.changes is not None
        change = new.changes
        total = sum(d.rps for d in demand)
        if not (change["moves"] or change["servers_added"] or change["servers_removed"]):
            self.log(f"observed {total:,.1f} req/s: no move ({len(new.servers)} servers)")
            return plan
        self.log(
            f"observed {total:,.1f} req/s: {len(change['moves'])} model(s) move, "
            f"{len(change['servers_added'])} server(s) added, "
            f"{len(change['servers_removed'])} removed"
        )
        self.roll_out(self.specs(plan), self.specs(new))
        self.cluster.write_plan(yaml.safe_dump(plan_to_dict(new), sort_keys=False))
        self.log(f"applied: {len(new.servers)} servers, {new.totals['usd_per_hour']:.3f} USD/h")
        return new

    def roll_out(self, old: Sequence[ServerSpec], new: Sequence[ServerSpec]) -> None:
        steps = step_manifests(old, new, self.manifests)
        change = rollout_of(old, new)
        self._apply(steps[STEPS[0]].values(), STEPS[0])
        self._wait(change.grows)
        self._apply(steps[STEPS[1]].values(), STEPS[1])
        self._apply(build_manifests(new, self.manifests).values(), "the new plan")
        self._wait(change.shrinks)
        old_files = build_manifests(old, self.manifests)
        for name in change.removed:
            for manifest in old_files[f"servers/{name}.yaml"]:
                self.cluster.delete(manifest)
            self.log(f"deleted server {name}")

    def _apply(self, files: Iterable[list[Manifest]], what: str) -> None:
        count = 0
        for objects in files:
            for manifest in objects:
                self.cluster.apply(manifest)
                count += 1
        self.log(f"applied {what} ({count} objects)")

    def _wait(self, deployments: Sequence[str]) -> None:
        deadline = self.clock() + self.rollout_timeout_s
        for name in deployments:
            while not self.cluster.rolled_out(name):
                if self.clock() > deadline:
                    raise UnavailableError(
                        f"deployment {name} did not roll out in {self.rollout_timeout_s:g} s"
                    )
                self.sleep(self.poll_s)
            self.log(f"deployment {name} rolled out")

    def run(self, initial: Plan, interval_s: float, steps: int | None = None) -> None:
        """Every ``interval_s``: a step; ``steps`` of them (None: until killed)."""
        plan = self.plan(initial)
        self.observe(plan)  # counts start here
        done = 0
        while steps is None or done < steps:
            self.sleep(interval_s)
            try:
                plan = self.step(plan)
            except InferpackError as error:
                self.log(f"not applied ({error}); the plan in effect stays")
            done += 1


def controller_manifests(
    config: ManifestConfig, args: Sequence[str], profiles_text: str, plan_text: str
) -> list[Manifest]:
    """The controller in the cluster: a ServiceAccount, a Role in the namespace only (the
    objects it writes, pods to read, its ConfigMaps), their RoleBinding, a ConfigMap with
    the profiles and the first plan, and a one-replica Deployment running
    ``inferpack controller ARGS``."""
    name = dns_label(f"{config.plan_name}-controller")
    labels = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/part-of": dns_label(config.plan_name),
        "app.kubernetes.io/component": "controller",
    }

    def metadata(object_name: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": object_name, "labels": dict(labels)}
        if config.namespace:
            meta["namespace"] = config.namespace
        return meta

    write = ["get", "list", "watch", "create", "patch", "update", "delete"]
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": write},
        {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": write},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": write},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": write},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": write},
    ]
    files = f"{name}-files"
    container = {
        "name": "controller",
        "image": config.image,
        "command": ["inferpack"],
        "args": ["controller", *args, "--profiles", "/etc/inferpack/profiles.yaml",
                 "--plan", "/etc/inferpack/plan.yaml"],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "files", "mountPath": "/etc/inferpack", "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(name),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": name,
                    **({"namespace": config.namespace} if config.namespace else {}),
                }
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(files),
            "data": {"profiles.yaml": profiles_text, "plan.yaml": plan_text},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(name),
            "spec": {
                "replicas": 1,  # one controller: two would apply the same steps twice
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
                "template": {
                    "metadata": {"labels": {**labels, "app.kubernetes.io/instance": name}},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [container],
                        "volumes": [{"name": "files", "configMap": {"name": files}}],
                    },
                },
            },
        },
    ]
