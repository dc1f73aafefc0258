"""inferpack controller's observation: rates from the pods' statistics, differenced."""

from __future__ import annotations

from typing import Any

from inferpack.deploy.k8s_controller import ClusterController
from inferpack.deploy.k8s_rollout import union_specs
from inferpack.deploy.k8s_workload import ManifestConfig
from inferpack.plan.formats import ModelShare, Plan, PlanSummary, ServerPlan
from inferpack.plan.problem import PlanOptions
from tests.unit.test_kubernetes_manifests import _spec

PLAN = Plan(
    PlanSummary(50.0, "test", 0.0, 1.0, 1.0, 0.0),
    (ServerPlan("s-001", "c5.2xlarge", 1.0, (ModelShare("a", "k", 5.0),), 100.0, 0.1, 0.1,
                None),),
)  # fmt: skip


class Pods:
    def pod_addresses(self, server: str) -> list[str]:
        return ["10.0.0.1:8000", "10.0.0.2:8000"]


def test_a_pod_that_missed_a_reading_is_not_counted_as_new() -> None:
    """Pod 1 answers 100, misses one reading, then answers 130: 30 requests in that
    interval, not 130; pod 2 restarts (its count falls): its new count is all new."""
    readings: list[dict[str, Any]] = [
        {"10.0.0.1:8000": 100, "10.0.0.2:8000": 50},
        {"10.0.0.1:8000": None, "10.0.0.2:8000": 60},
        {"10.0.0.1:8000": 130, "10.0.0.2:8000": 5},
    ]
    step: dict[str, Any] = {"n": 0, "t": 0.0}

    def fetch(address: str) -> dict[str, Any]:
        count = readings[step["n"]][address]
        if count is None:
            raise OSError("timed out")
        return {"model_stats": [{"name": "a", "inference_stats": {"success": {"count": count}}}]}

    controller: Any = ClusterController(
        cluster=Pods(),  # type: ignore[arg-type]
        manifests=ManifestConfig(image="x", plan_name="fleet"),
        profiles=(), types=(), options=PlanOptions(slo_p90_ms=50.0),
        shapes={"c5.2xlarge": (None, 0, 8, 16.0)}, model_repository="repo",
        log=lambda _: None, fetch=fetch, clock=lambda: step["t"],
    )  # fmt: skip
    assert controller.observe(PLAN) is None  # counting starts
    step.update(n=1, t=10.0)
    assert controller.observe(PLAN) == {"a": 1.0}  # pod 2: 10 in 10 s; pod 1 silent
    step.update(n=2, t=20.0)
    assert controller.observe(PLAN) == {"a": 3.5}  # pod 1: 30 (not 130); pod 2: 5 (restart)


def test_a_kept_server_in_step_one_asks_for_the_gained_models_only() -> None:
    old = _spec("s0", "c5.2xlarge", "cpu", 0, 8, 16, ("m0", "m1", "m2"), 9000.0)
    new = _spec("s0", "c5.2xlarge", "cpu", 0, 8, 16, ("m0", "m1", "m2", "m3"), 9500.0)
    (union,) = union_specs([old], [new])
    assert union.models == ("m0", "m1", "m2", "m3")
    assert union.models_memory_mb == 9000.0 + 9500.0 / 4  # not 18,500: kept models once
