"""deploy --target kubernetes --previous: the rollout order keeps every model served.

The check models a cluster applying the steps: ``kubectl apply -k`` never prunes, so a
removed server runs until deleted; while a Deployment rolls, pods of its old and new
template both serve (maxUnavailable 0), and the Ingress may still be the old one or
already the new one. At every such moment every model of both plans (and from the new
routing on, every new model) must have a route whose every selectable pod loaded it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.deploy.k8s_rollout import STEPS, step_manifests, union_specs
from inferpack.deploy.k8s_workload import Manifest
from inferpack.deploy.kubernetes import build_manifests, write_manifests
from inferpack.deploy.spec import ServerSpec
from inferpack.errors import ConfigError
from tests.unit.test_kubernetes_manifests import CONFIG, K8S_VERSIONS, _spec

Files = dict[str, list[Manifest]]


def _specs(placement: Sequence[Sequence[int]], names: Sequence[str]) -> list[ServerSpec]:
    return [
        _spec(name, "c5.2xlarge", "cpu", 0, 8, 16, tuple(f"m{m}" for m in sorted(set(models))))
        for name, models in zip(names, placement, strict=True)
        if models
    ]


def _pods(files: Files) -> dict[str, tuple[dict[str, str], set[str]]]:
    """Deployment name → its pod template's labels and the models its server loads."""
    pods = {}
    for objects in files.values():
        for item in objects:
            if item["kind"] == "Deployment":
                template = item["spec"]["template"]
                args = template["spec"]["containers"][0]["args"]
                models = {args[i + 1] for i, a in enumerate(args) if a == "--load-model"}
                pods[item["metadata"]["name"]] = (template["metadata"]["labels"], models)
    return pods


def _services(files: Files) -> dict[str, dict[str, str]]:
    return {
        item["metadata"]["name"]: item["spec"]["selector"]
        for objects in files.values()
        for item in objects
        if item["kind"] == "Service"
    }


def _routes(files: Files) -> dict[str, str]:
    ingress = next(i for i in files["routing.yaml"] if i["kind"] == "Ingress")
    return {
        path["path"].removeprefix("/v2/models/"): path["backend"]["service"]["name"]
        for path in ingress["spec"]["rules"][0]["http"]["paths"]
        if path["path"].startswith("/v2/models/")
    }


def _apply(cluster: Files, step: Files) -> Files:
    """kubectl apply without prune: objects of the step replace theirs, others stay."""
    return {**cluster, **step}


def _check_transition(before: Files, after: Files, models: set[str], moment: str) -> None:
    old_pods, new_pods = _pods(before), _pods(after)
    live = [p for pods in (old_pods, new_pods) for p in pods.values()]
    services = {**_services(before), **_services(after)}
    for routes in (_routes(before), _routes(after)):
        for model in sorted(models):
            target = routes.get(model)
            assert target is not None, f"{moment}: {model} has no route"
            selector = services[target]
            chosen = [m for labels, m in live if selector.items() <= labels.items()]
            assert chosen, f"{moment}: {model}'s Service {target} selects no pod"
            assert all(model in m for m in chosen), f"{moment}: a pod of {target} lacks {model}"


def _walk(old: list[ServerSpec], new: list[ServerSpec]) -> None:
    steps = step_manifests(old, new, CONFIG)
    final = build_manifests(new, CONFIG)
    both = {m for s in old for m in s.models} & {m for s in new for m in s.models}
    only_new = {m for s in new for m in s.models} - both
    cluster = build_manifests(old, CONFIG)
    cluster_1 = _apply(cluster, steps[STEPS[0]])
    _check_transition(cluster, cluster_1, both, "step 1")
    cluster_2 = _apply(cluster_1, steps[STEPS[1]])
    _check_transition(cluster_1, cluster_2, both, "step 2")
    _check_transition(cluster_2, cluster_2, both | only_new, "after step 2")
    cluster_3 = _apply(cluster_2, final)
    _check_transition(cluster_2, cluster_3, both | only_new, "final")
    removed = {s.name for s in old} - {s.name for s in new}
    deleted = {k: v for k, v in cluster_3.items() if k.removeprefix("servers/")[:-5] not in removed}
    _check_transition(cluster_3, deleted, both | only_new, "removed servers deleted")


NAMES = [f"s{i}" for i in range(5)]
placements = st.lists(st.lists(st.integers(0, 5), max_size=4), min_size=5, max_size=5)


@settings(max_examples=80, deadline=None)
@given(old=placements, new=placements)
def test_every_model_stays_served_through_a_random_replan(
    old: list[list[int]], new: list[list[int]]
) -> None:
    before, after = _specs(old, NAMES), _specs(new, NAMES)
    if not before or not after:
        return
    _walk(before, after)


def test_a_replan_moving_models_between_kept_added_and_removed_servers() -> None:
    old = _specs([[0, 1], [1, 2], [3]], ["s0", "s1", "s2"])
    new = _specs([[0], [1, 2, 3], [4]], ["s0", "s1", "s3"])  # s2 removed, s3 added
    union = {s.name: s.models for s in union_specs(old, new)}
    assert union == {"s0": ("m0", "m1"), "s1": ("m1", "m2", "m3"), "s2": ("m3",), "s3": ("m4",)}
    _walk(old, new)


def test_the_rollout_files_validate_and_the_script_orders_them(tmp_path: Path) -> None:
    old = _specs([[0, 1], [1, 2], [3]], ["s0", "s1", "s2"])
    new = _specs([[0], [1, 2, 3], [4]], ["s0", "s1", "s3"])
    written = write_manifests(
        new, tmp_path, image=CONFIG.image, namespace="serving", plan_name="fleet", previous=old
    )
    names = {str(p.relative_to(tmp_path)) for p in written}
    wanted = {
        "rollout.sh",
        "rollout/1-servers/kustomization.yaml",
        "rollout/2-routing/routing.yaml",
    }
    assert wanted <= names
    for path in written:
        if path.suffix != ".yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document.get("kind") == "Kustomization":
                for resource in document["resources"]:
                    assert (path.parent / resource).exists()
                continue
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(document, version, strict=True)
    script = (tmp_path / "rollout.sh").read_text().splitlines()
    commands = [line for line in script if line.startswith(("kubectl", "echo"))]
    assert commands == [
        "kubectl apply -k rollout/1-servers",
        "kubectl rollout status -n serving deployment/s1 --timeout=15m",  # gains m3
        "kubectl rollout status -n serving deployment/s3 --timeout=15m",  # added
        "kubectl apply -k rollout/2-routing",
        "kubectl apply -k .",
        "kubectl rollout status -n serving deployment/s0 --timeout=15m",  # drops m1
        "kubectl delete -n serving -f rollout/1-servers/servers/s2.yaml --ignore-not-found",
        'echo "re-plan applied"',
    ]
    assert (tmp_path / "rollout.sh").stat().st_mode & 0o111


def test_a_bad_previous_plan_is_refused_with_the_reason() -> None:
    bad = [_spec("s0", "c5.2xlarge", "cpu", 0, 8, 16, ("bad model",))]
    with pytest.raises(ConfigError, match="can be routed by path"):
        write_manifests(bad, Path("/nonexistent"), image="x", previous=bad)


def test_the_check_catches_applying_the_new_plan_in_one_go() -> None:
    """Without the steps, a model moving to a kept server is routed there while that
    server's old pod (without it) still serves: the check must see it."""
    old = _specs([[0, 1], [2]], ["s0", "s1"])
    new = _specs([[0], [1, 2]], ["s0", "s1"])
    both = {"m0", "m1", "m2"}
    with pytest.raises(AssertionError, match="lacks m1"):
        _check_transition(build_manifests(old, CONFIG), build_manifests(new, CONFIG), both, "x")
