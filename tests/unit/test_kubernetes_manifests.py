"""The Kubernetes manifest builders: pure functions checked against the API schemas (strict,
no cluster) and against what each object is for: the argv, the placement, the resources,
the routing of every model, the kustomization."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from inferpack.deploy.dockerfiles import dockerfile
from inferpack.deploy.k8s_workload import (
    PRESTOP_SLEEP_S,
    TERMINATION_GRACE_S,
    model_label,
    model_service_name,
    resources,
)
from inferpack.deploy.kubernetes import (
    ManifestConfig,
    build_manifests,
    ingress,
    replicated_models,
    write_manifests,
)
from inferpack.deploy.spec import ServerSpec
from inferpack.errors import ConfigError

# The oldest release the manifests claim (PDB unhealthyPodEvictionPolicy: beta, on by
# default since 1.27) and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())
LONG_MODEL = "Sentiment_Classifier." + "x" * 90  # upper case, '_' and > 63 characters
CONFIG = ManifestConfig(image="ghcr.io/x/inferpack:1", namespace="serving", plan_name="fleet")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _spec(name: str, instance_type: str, device: str, count: int, vcpu: int, memory_gib: float,
          models: tuple[str, ...], models_memory_mb: float = 2000.0) -> ServerSpec:  # fmt: skip
    return ServerSpec(
        name=name,
        instance_type=instance_type,
        device=device,
        accelerator_count=count,
        vcpu=vcpu,
        instance_memory_mb=memory_gib * 1024,
        models=models,
        models_memory_mb=models_memory_mb,
        model_repository="s3://bucket/models",
    )


CPU = _spec("c5-2xlarge-001", "c5.2xlarge", "cpu", 0, 8, 16, ("resnet50", LONG_MODEL))
CUDA = _spec("g4dn-xlarge-001", "g4dn.xlarge", "cuda", 1, 4, 16, ("bert", "resnet50"))
NEURON = _spec("inf1-6xlarge-001", "inf1.6xlarge", "neuron", 4, 24, 48, ("resnet50", "yolo"))
SPECS = [NEURON, CPU, CUDA]  # not sorted: the output is


def _objects(files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [obj for objects in files.values() for obj in objects]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return _objects(build_manifests(SPECS, CONFIG))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly(objects: list[dict[str, Any]], version: str) -> None:
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "Deployment", "HorizontalPodAutoscaler", "Ingress", "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["namespace"] == "serving"


def test_container_runs_exactly_the_local_argv(objects: list[dict[str, Any]]) -> None:
    for spec in SPECS:
        pod = _find(objects, "Deployment", spec.name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] + container["args"] == spec.argv()
        assert container["image"] == "ghcr.io/x/inferpack:1"
        assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": spec.instance_type}


def test_accelerators_are_requested_and_their_taints_tolerated(
    objects: list[dict[str, Any]],
) -> None:
    expected = {CPU.name: None, CUDA.name: "nvidia.com/gpu", NEURON.name: "aws.amazon.com/neuron"}
    for name, device in expected.items():
        pod = _find(objects, "Deployment", name)["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        extended = {k: v for k, v in limits.items() if k not in ("cpu", "memory")}
        if device is None:
            assert extended == {} and "tolerations" not in pod
            continue
        count = str(next(s for s in SPECS if s.name == name).accelerator_count)
        assert extended == {device: count}
        assert pod["containers"][0]["resources"]["requests"][device] == count
        assert pod["tolerations"] == [{"key": device, "operator": "Exists", "effect": "NoSchedule"}]


def test_resources_leave_room_for_the_node() -> None:
    found = resources(CPU)
    assert found["requests"] == {"cpu": "7000m", "memory": f"{CPU.memory_request_mb}Mi"}
    assert found["limits"]["cpu"] == "8"
    limit_mb = int(found["limits"]["memory"].removesuffix("Mi"))
    assert CPU.memory_request_mb < limit_mb <= 0.9 * CPU.instance_memory_mb
    small = dataclasses.replace(CPU, vcpu=1)
    assert resources(small)["requests"]["cpu"] == "500m"


def test_a_server_too_big_for_its_instance_is_refused() -> None:
    huge = dataclasses.replace(CPU, models_memory_mb=15_000.0)
    with pytest.raises(ConfigError, match=r"c5-2xlarge-001: needs \d+ MiB but a c5.2xlarge"):
        build_manifests([huge], CONFIG)


def test_probes_and_shutdown(objects: list[dict[str, Any]]) -> None:
    pod = _find(objects, "Deployment", NEURON.name)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    more = dataclasses.replace(NEURON, models=tuple(f"m{i}" for i in range(100)))
    bigger = _objects(build_manifests([more], CONFIG))
    more_startup = _find(bigger, "Deployment", NEURON.name)["spec"]["template"]["spec"]
    assert (
        more_startup["containers"][0]["startupProbe"]["failureThreshold"]
        > startup["failureThreshold"]
    )
    assert pod["terminationGracePeriodSeconds"] == TERMINATION_GRACE_S > PRESTOP_SLEEP_S
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP_S)]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8000,
        "grpc": 8001,
    }


def test_pods_run_unprivileged_on_a_read_only_root(objects: list[dict[str, Any]]) -> None:
    pod = _find(objects, "Deployment", CPU.name)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["XDG_CACHE_HOME"] in mounts and "/tmp" in mounts
    assert container["envFrom"] == [{"secretRef": {"name": "inferpack-s3", "optional": True}}]


def test_labels_name_app_server_and_plan(objects: list[dict[str, Any]]) -> None:
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        labels = _find(objects, kind, CUDA.name)["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "inferpack"
        assert labels["app.kubernetes.io/instance"] == CUDA.name
        assert labels["app.kubernetes.io/part-of"] == "fleet"


def test_each_server_has_a_service_and_a_budget_that_allows_drains(
    objects: list[dict[str, Any]],
) -> None:
    for spec in SPECS:
        deployment = _find(objects, "Deployment", spec.name)
        selector = deployment["spec"]["selector"]["matchLabels"]
        service = _find(objects, "Service", spec.name)
        assert service["spec"]["selector"] == selector
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["http"]["port"] == 8000
        assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
        budget = _find(objects, "PodDisruptionBudget", spec.name)["spec"]
        assert budget["selector"]["matchLabels"] == selector
        assert budget["maxUnavailable"] == 1


def _route_targets(ingress_object: dict[str, Any]) -> dict[str, str]:
    paths = ingress_object["spec"]["rules"][0]["http"]["paths"]
    assert all(p["pathType"] == "Prefix" for p in paths)
    return {p["path"]: p["backend"]["service"]["name"] for p in paths}


def test_every_model_is_routed_to_a_service_hosting_it(objects: list[dict[str, Any]]) -> None:
    targets = _route_targets(_find(objects, "Ingress", "fleet"))
    models = {m for s in SPECS for m in s.models}
    assert len(targets) == 2 * len(models)
    for model in models:
        hosts = [s.name for s in SPECS if model in s.models]
        for prefix in ("/v2/models/", "/predictions/"):
            target = targets[prefix + model]
            expected = model_service_name(model) if len(hosts) > 1 else hosts[0]
            assert target == expected


def test_a_replicated_model_has_one_service_over_all_its_hosts(
    objects: list[dict[str, Any]],
) -> None:
    assert list(replicated_models(SPECS)) == ["resnet50"]
    service = _find(objects, "Service", model_service_name("resnet50"))
    selector = service["spec"]["selector"]
    for spec in SPECS:
        pod_labels = _find(objects, "Deployment", spec.name)["spec"]["template"]["metadata"]
        selected = all(pod_labels["labels"].get(k) == v for k, v in selector.items())
        assert selected == ("resnet50" in spec.models), spec.name
    assert {p["name"] for p in service["spec"]["ports"]} == {"http", "grpc"}


def test_long_and_odd_model_names_make_valid_distinct_names() -> None:
    names = [LONG_MODEL, LONG_MODEL.lower(), LONG_MODEL + "y", "Resnet", "resnet"]
    keys = [model_label(n).removeprefix("model.inferpack.dev/") for n in names]
    services = [model_service_name(n) for n in names]
    for key, service_name in zip(keys, services, strict=True):
        assert len(key) <= 63 and _LABEL_NAME.match(key), key
        assert len(service_name) <= 63 and _DNS_1035.match(service_name), service_name
    assert len(set(keys)) == len(set(services)) == len(names)
    assert model_label("resnet") == "model.inferpack.dev/resnet"  # readable when it can be


def test_a_server_name_starting_with_a_digit_gets_a_letter_service_name() -> None:
    digit = dataclasses.replace(CPU, name="4-servers")
    targets = _route_targets(ingress([digit], CONFIG))
    assert set(targets.values()) == {"s-4-servers"}
    objects = _objects(build_manifests([digit], CONFIG))
    assert (
        _find(objects, "Service", "s-4-servers")["spec"]["selector"]["app.kubernetes.io/instance"]
        == "4-servers"
    )


def test_output_does_not_depend_on_the_order_of_the_specs() -> None:
    first = build_manifests(SPECS, CONFIG)
    again = build_manifests(list(reversed(SPECS)), CONFIG)
    assert yaml.safe_dump(first) == yaml.safe_dump(again)
    assert list(first) == [*sorted(f for f in first if f.startswith("servers/")), "routing.yaml"]


def test_every_problem_is_reported_at_once() -> None:
    odd = dataclasses.replace(CPU, models=("bad/model", "ok"))
    twin = dataclasses.replace(CUDA, name=CPU.name)
    config = ManifestConfig(image=" ", namespace="Not_A_Label")
    with pytest.raises(ConfigError) as caught:
        build_manifests([odd, twin], config)
    problems = "\n".join(caught.value.problems)
    for part in ("image", "Not_A_Label", "'bad/model'", f"repeat once made DNS labels: {CPU.name}"):
        assert part in problems
    with pytest.raises(ConfigError, match="no servers"):
        build_manifests([], CONFIG)


def test_write_manifests_lists_every_file_in_the_kustomization(tmp_path: Path) -> None:
    written = write_manifests(SPECS, tmp_path, image="img:1", namespace="serving")
    assert all(path.is_file() for path in written)
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "serving"
    manifests = sorted(
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*.yaml")
        if p.name != "kustomization.yaml"
    )
    assert sorted(kustomization["resources"]) == manifests
    docker = sorted(p.name for p in (tmp_path / "docker").iterdir())
    assert docker == ["Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.neuron"]
    for path in tmp_path.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            assert document  # no empty document between '---'


def test_without_namespace_none_is_written(tmp_path: Path) -> None:
    write_manifests([CPU], tmp_path, image="img:1")
    assert "namespace" not in yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    assert "namespace:" not in (tmp_path / "servers" / f"{CPU.name}.yaml").read_text()
    assert [p.name for p in (tmp_path / "docker").iterdir()] == ["Dockerfile.cpu"]


@pytest.mark.parametrize("kind", ["cpu", "cuda", "neuron"])
def test_dockerfiles_run_as_the_manifests_user(kind: str) -> None:
    text = dockerfile(kind)
    assert "ARG BASE_IMAGE" in text and "FROM ${BASE_IMAGE}" in text
    assert "USER 10001:10001" in text and "useradd --uid 10001" in text
    assert "inferpack[torch,s3,image,kubernetes]" in text
    assert ("download.pytorch.org/whl/cpu" in text) == (kind == "cpu")
    with pytest.raises(ValueError, match="tpu"):
        dockerfile("tpu")


def test_the_builders_do_not_import_torch() -> None:
    code = "import sys, inferpack.deploy.kubernetes; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_each_server_scales_on_requests_in_flight(objects: list[dict[str, Any]]) -> None:
    """An autoscaling/v2 HPA per server Deployment, on the server's own in-flight gauge
    (a Pods metric for prometheus-adapter); the Deployment leaves the count to it."""
    for spec in SPECS:
        hpa = _find(objects, "HorizontalPodAutoscaler", spec.name)["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name,
        }  # fmt: skip
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, CONFIG.max_replicas)
        [metric] = hpa["metrics"]
        assert metric["pods"]["metric"]["name"] == "inferpack_inflight_requests"
        assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "16"}
        assert "replicas" not in _find(objects, "Deployment", spec.name)["spec"]


def test_pods_request_the_plans_server_memory() -> None:
    """The memory request is the models plus the overhead the plan packed with."""
    from dataclasses import replace as with_

    heavy = with_(CPU, base_memory_mb=1500.0)
    [deployment] = [
        o for o in _objects(build_manifests([heavy], CONFIG)) if o["kind"] == "Deployment"
    ]
    requests = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["memory"] == f"{2000 + 1500}Mi"


def test_specs_carry_the_plans_overhead_and_rates() -> None:
    from inferpack.deploy.spec import SERVER_BASE_MEMORY_MB, server_specs
    from inferpack.plan.formats import ModelShare, Plan, PlanSummary, ServerPlan

    server = ServerPlan(
        "c5-001", "c5.2xlarge", 0.34,
        (ModelShare("a", "cnn", 3.0), ModelShare("b", "mlp", 1.5)), 100.0, 0.1, 0.1, None,
    )  # fmt: skip
    instances = {"c5.2xlarge": (None, 0, 8, 16.0)}
    summary = PlanSummary(50.0, "x", 0.0, 0.34, 0.34, 0.0, server_overhead_mb=900.0)
    [spec] = server_specs(Plan(summary, (server,)), "s3://m", instances)
    assert spec.memory_request_mb == 1000
    assert spec.kinds == (("a", "cnn"), ("b", "mlp")) and spec.rates == (("a", 3.0), ("b", 1.5))
    older = PlanSummary(50.0, "x", 0.0, 0.34, 0.34, 0.0)  # a plan written without it
    [spec] = server_specs(Plan(older, (server,)), "s3://m", instances)
    assert spec.memory_request_mb == 100 + SERVER_BASE_MEMORY_MB
