"""``inferpack deploy --target kubernetes`` through the real CLI: a plan file and a catalogue
override in, the manifest folder out; and the errors a user meets (missing flags, an
instance type the catalogue does not know)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from inferpack.plan.formats import ModelShare, Plan, PlanSummary, ServerPlan, write_plan
from tests.integration.cli_server import inferpack

REGION = "eu-test-1"
# Shapes only this override knows, in a region only it prices: the manifests can only
# carry these numbers if --catalog and --region both took effect.
CATALOG = {
    "instances": [
        {"name": name, "region": REGION, "basis": "on-demand", "price_usd_per_hour": price,
         "price_date": "2026-01-01", "source": "test", "vcpu": vcpu, "memory_gib": memory,
         "accelerator": accelerator, "accelerator_count": count, "accelerator_memory_gib": 0}
        for name, price, vcpu, memory, accelerator, count in (
            ("c9.test", 0.3, 8, 16, None, 0),
            ("g9.test", 1.0, 8, 32, "NVIDIA T4", 2),
            ("inf9.test", 1.2, 24, 48, "Inferentia", 4),
        )
    ]
}  # fmt: skip


def _server(name: str, instance_type: str, *models: str) -> ServerPlan:
    shares = tuple(ModelShare(model, "cnn", 10.0) for model in models)
    return ServerPlan(name, instance_type, 1.0, shares, 1500.0, 0.2, 0.5, 40.0)


def _plan(*servers: ServerPlan) -> Plan:
    summary = PlanSummary(100.0, "test", 0.1, 3.0, 3.0, 0.0)
    return Plan(summary, servers)


def _deploy(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}  # no line breaks in the messages checked
    return subprocess.run(
        inferpack("deploy", *args),
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    plan = _plan(
        _server("c9-test-001", "c9.test", "resnet50", "mlp"),
        _server("g9-test-001", "g9.test", "resnet50", "bert"),
        _server("inf9-test-001", "inf9.test", "yolo"),
    )
    write_plan(path, plan)
    return path


def _documents(folder: Path) -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(folder.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
    ]


def test_every_flag_shapes_the_manifests(plan_file: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    output = tmp_path / "k8s"
    result = _deploy(
        str(plan_file), "--target", "kubernetes", "--model-repository", "s3://bucket/models",
        "--image", "ghcr.io/x/inferpack:1", "--output", str(output), "--namespace", "serving",
        "--catalog", str(catalog), "--region", REGION,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"to {output}" in result.stderr
    kustomization = yaml.safe_load((output / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "serving"
    assert sorted(kustomization["resources"]) == [
        "routing.yaml",
        "servers/c9-test-001.yaml",
        "servers/g9-test-001.yaml",
        "servers/inf9-test-001.yaml",
    ]
    documents = _documents(output)
    for document in documents:
        kubernetes_validate.validate(document, "1.28.0", strict=True)
        assert document["metadata"]["namespace"] == "serving"
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fleet"
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    gpu = deployments["g9-test-001"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["image"] == "ghcr.io/x/inferpack:1"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert gpu["args"][:3] == ["serve", "--model-repository", "s3://bucket/models"]
    neuron = deployments["inf9-test-001"]["spec"]["template"]["spec"]["containers"][0]
    assert neuron["resources"]["limits"]["aws.amazon.com/neuron"] == "4"
    (ingress,) = [d for d in documents if d["kind"] == "Ingress"]
    paths = {p["path"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert "/v2/models/resnet50" in paths and "/predictions/yolo" in paths
    assert sorted(p.name for p in (output / "docker").iterdir()) == [
        "Dockerfile.cpu",
        "Dockerfile.cuda",
        "Dockerfile.neuron",
    ]


def test_packaged_catalogue_and_no_namespace(tmp_path: Path) -> None:
    plan_file = tmp_path / "small.yaml"
    write_plan(plan_file, _plan(_server("c5-2xlarge-001", "c5.2xlarge", "mlp")))
    output = tmp_path / "out"
    result = _deploy(
        str(plan_file), "--target", "kubernetes", "--model-repository", "s3://b/m",
        "--image", "img:1", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "namespace" not in yaml.safe_load((output / "kustomization.yaml").read_text())
    assert [p.name for p in (output / "docker").iterdir()] == ["Dockerfile.cpu"]


@pytest.mark.parametrize("missing", ["--image", "--output"])
def test_image_and_output_are_required(plan_file: Path, tmp_path: Path, missing: str) -> None:
    flags = {"--image": "img:1", "--output": str(tmp_path / "out")}
    del flags[missing]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    result = _deploy(
        str(plan_file), "--target", "kubernetes", "--model-repository", "s3://b/m",
        "--catalog", str(catalog), "--region", REGION, *[x for kv in flags.items() for x in kv],
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "needs --image and --output" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_instance_type_is_named(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.yaml"
    write_plan(plan_file, _plan(_server("z-001", "zz9.enormous", "mlp")))
    output = tmp_path / "out"
    result = _deploy(
        str(plan_file), "--target", "kubernetes", "--model-repository", "s3://b/m",
        "--image", "img:1", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "zz9.enormous" in result.stderr
    assert not output.exists()


def test_a_replan_writes_its_rollout_order(plan_file: Path, tmp_path: Path) -> None:
    """--previous (the running plan) and --fleet-name (its objects' name): the new
    manifests plus rollout/ steps and rollout.sh; all validate; --previous alone is refused."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    new_plan = tmp_path / "fleet-v2.yaml"
    write_plan(
        new_plan,
        _plan(
            _server("c9-test-001", "c9.test", "resnet50", "mlp", "yolo"),  # gains yolo
            _server("g9-test-001", "g9.test", "bert"),  # loses resnet50
            _server("c9-test-002", "c9.test", "yolo"),  # added; inf9-test-001 removed
        ),
    )
    output = tmp_path / "k8s"
    common = [
        str(new_plan), "--target", "kubernetes", "--model-repository", "s3://bucket/models",
        "--image", "img:1", "--output", str(output), "--catalog", str(catalog),
        "--region", REGION, "--previous", str(plan_file),
    ]  # fmt: skip
    refused = _deploy(*common)
    assert refused.returncode == 2 and "--previous needs --fleet-name" in refused.stderr
    result = _deploy(*common, "--fleet-name", "fleet")
    assert result.returncode == 0, result.stdout + result.stderr
    documents = _documents(output)
    for document in documents:
        kubernetes_validate.validate(document, "1.28.0", strict=True)
        kubernetes_validate.validate(document, kubernetes_validate.utils.latest_version(), True)
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fleet"
    script = (output / "rollout.sh").read_text()
    order = ["apply -k rollout/1-servers", "deployment/c9-test-001", "deployment/c9-test-002",
             "apply -k rollout/2-routing", "apply -k .", "deployment/g9-test-001",
             "servers/inf9-test-001.yaml"]  # fmt: skip
    positions = [script.index(step) for step in order]
    assert positions == sorted(positions), script
    local = _deploy(str(new_plan), "--target", "local", "--model-repository", "m",
                    "--previous", str(plan_file))  # fmt: skip
    assert local.returncode == 2 and "--previous is for --target kubernetes" in local.stderr


def test_the_controller_flag_adds_the_in_cluster_loop(plan_file: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("profiles: []\n")
    output = tmp_path / "k8s"
    common = [
        str(plan_file), "--target", "kubernetes", "--model-repository", "s3://bucket/models",
        "--image", "img:1", "--output", str(output), "--catalog", str(catalog),
        "--region", REGION, "--namespace", "serving", "--controller",
    ]  # fmt: skip
    refused = _deploy(*common)
    assert refused.returncode == 2 and "--controller needs --target kubernetes" in refused.stderr
    result = _deploy(*common, "--profiles", str(profiles), "--interval-s", "45",
                     "--headroom", "0.3", "--max-moves", "7")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "controller.yaml"
        in yaml.safe_load((output / "kustomization.yaml").read_text())["resources"]
    )
    objects = list(yaml.safe_load_all((output / "controller.yaml").read_text()))
    for document in objects:
        kubernetes_validate.validate(document, "1.28.0", strict=True)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    joined = " ".join(args)
    assert "--fleet-name fleet" in joined and "--namespace serving" in joined
    assert "--interval-s 45 --headroom 0.3 --max-moves 7" in joined
    files = next(o for o in objects if o["kind"] == "ConfigMap")
    assert files["data"]["profiles.yaml"] == "profiles: []\n"
    assert "c9-test-001" in files["data"]["plan.yaml"]
