"""``inferpack controller`` through the real CLI and the official kubernetes client, against
a fake Kubernetes API server on 127.0.0.1 (no cluster runs here).

The fake keeps the objects applied to it (server-side apply only: the client must send
``application/apply-patch+yaml`` with the field manager), rolls a Deployment whose pod
template changed out after two reads of it, and lists one ready "pod" per server
Deployment, whose address is a real ``inferpack serve`` holding every model. The test
sends load to that server; the controller must observe it from the pods' statistics,
re-plan (the demand outgrows one server) and roll the new plan out in the safe order.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import tritonclient.http as httpclient
import yaml

from inferpack.plan.formats import (
    ModelShare,
    Plan,
    PlanSummary,
    Profile,
    ServerPlan,
    read_plan,
    write_plan,
    write_profiles,
)
from tests.integration.cli_server import serve
from tests.integration.test_deploy_local import CATALOG, REGION, _deploy
from tests.integration.test_router import build_fleet_repo

NAMESPACE = "serving"
_PATH = re.compile(r"^/apis?/(?:[^/]+/)?v\d+/namespaces/([^/]+)/([a-z]+)(?:/([^/?]+))?$")
KINDS = {
    "deployments": "Deployment",
    "services": "Service",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "ingresses": "Ingress",
    "configmaps": "ConfigMap",
}


class FakeApi:
    """The objects of one namespace, the calls made, and the pods' address."""

    def __init__(self, pod_port: int) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.rolling: dict[str, int] = {}
        self.problems: list[str] = []
        self.pod_port = pod_port
        self.lock = threading.Lock()

    def seed(self, files: dict[str, list[dict[str, Any]]]) -> None:
        """Objects that run already (the first plan, as deploy wrote and kubectl applied it)."""
        for objects in files.values():
            for item in objects:
                body = json.loads(json.dumps(item))
                body["metadata"]["generation"] = 1
                self.objects[(item["kind"], item["metadata"]["name"])] = body

    def handle(self, verb: str, path: str, query: dict[str, list[str]], body: Any,
               content_type: str) -> tuple[int, Any]:  # fmt: skip
        if path.endswith("/pods"):
            return 200, self._pods(query.get("labelSelector", [""])[0])
        found = _PATH.match(path)
        if not found or found[2] not in KINDS:
            return 404, {"kind": "Status", "code": 404, "message": f"no route {path}"}
        namespace, kind, name = found[1], KINDS[found[2]], found[3] or ""
        if namespace != NAMESPACE:
            self.problems.append(f"{verb} {path}: namespace {namespace}")
        key = (kind, name)
        with self.lock:
            self.calls.append((verb, kind, name))
            if verb == "PATCH":
                return self._apply(key, body, query, content_type)
            if key not in self.objects:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
            if verb == "DELETE":
                del self.objects[key]
                return 200, {"kind": "Status", "status": "Success"}
            return 200, self._with_status(key)

    def _apply(self, key: tuple[str, str], body: Any, query: dict[str, list[str]],
               content_type: str) -> tuple[int, Any]:  # fmt: skip
        if content_type != "application/apply-patch+yaml" or query.get("fieldManager") != [
            "inferpack"
        ]:
            self.problems.append(f"{key}: not a server-side apply ({content_type}, {query})")
        old = self.objects.get(key)
        generation = (old or {}).get("metadata", {}).get("generation", 0)
        changed = old is None or old.get("spec") != body.get("spec")
        body = json.loads(json.dumps(body))
        body["metadata"]["generation"] = generation + (1 if changed else 0)
        self.objects[key] = body
        if key[0] == "Deployment" and changed:
            self.rolling[key[1]] = 2  # rolled out after two reads
        return 200, body

    def _with_status(self, key: tuple[str, str]) -> dict[str, Any]:
        found = dict(self.objects[key])
        if key[0] == "Deployment":
            left = self.rolling.get(key[1], 0)
            self.rolling[key[1]] = max(0, left - 1)
            generation = found["metadata"]["generation"]
            found["status"] = (
                {"observedGeneration": generation - 1, "replicas": 2, "updatedReplicas": 1,
                 "availableReplicas": 1}
                if left
                else {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1,
                      "availableReplicas": 1}
            )  # fmt: skip
        return found

    def _pods(self, selector: str) -> dict[str, Any]:
        server = dict(p.split("=", 1) for p in selector.split(",")).get(
            "app.kubernetes.io/instance"
        )
        items = []
        if ("Deployment", server) in self.objects:
            items.append({
                "metadata": {"name": f"{server}-pod"},
                "spec": {"containers": [{
                    "name": "server",
                    "ports": [{"name": "http", "containerPort": self.pod_port}],
                }]},
                "status": {"podIP": "127.0.0.1",
                           "conditions": [{"type": "Ready", "status": "True"}]},
            })  # fmt: skip
        return {"kind": "PodList", "apiVersion": "v1", "items": items}


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, verb: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = api.handle(
                verb, url.path, parse_qs(url.query), body, self.headers.get("Content-Type", "")
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_PATCH(self) -> None:
            self._answer("PATCH")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def fake_api(pod_port: int) -> Iterator[tuple[str, FakeApi]]:
    """The fake API server's URL and state, while it runs."""
    api = FakeApi(pod_port)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", api
    finally:
        server.shutdown()
        server.server_close()


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
    }))  # fmt: skip
    return path


def test_the_controller_observes_pods_replans_and_rolls_out_in_order(tmp_path: Path) -> None:
    repo = build_fleet_repo(tmp_path / "models")
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    profiles = tmp_path / "profiles.yaml"
    write_profiles(profiles, [Profile("tiny", "c5.2xlarge", 50.0, 20.0, 100.0, "test", 3)])
    plan = tmp_path / "plan.yaml"
    shares = tuple(ModelShare(m, "tiny", 1.0) for m in ("mlp-a", "mlp-b", "mlp-c"))
    write_plan(plan, Plan(PlanSummary(100.0, "test", 0.0, 0.3, 0.3, 0.0),
                          (ServerPlan("c5-2xlarge-001", "c5.2xlarge", 0.3, shares, 150.0, 0.1,
                                      0.15, None),)))  # fmt: skip
    with serve(tmp_path / "serve.log", "--model-repository", str(repo), "--http-port", "0",
               "--grpc-port", "-1") as server:  # fmt: skip
        port = int(server.url.rsplit(":", 1)[1])
        with fake_api(port) as (url, api):
            api.seed(_first_manifests(plan))
            output, code = _run_controller(tmp_path, url, server.url, plan, profiles, catalog)
    assert code == 0, output
    assert not api.problems, api.problems
    assert "server(s) added" in output and "applied:" in output, output
    stored = api.objects[("ConfigMap", "fleet-plan")]["data"]["plan.yaml"]
    path = tmp_path / "stored.yaml"
    path.write_text(stored)
    new = read_plan(path)
    assert len(new.servers) > 1, output  # ~40 req/s of mlp-a outgrew one 16 req/s server
    calls = api.calls
    applies = [i for i, c in enumerate(calls) if c[0] == "PATCH" and c[1] == "Ingress"]
    assert len(applies) == 3  # step 1 (old routing), step 2 (new routing), the new plan
    added = [s.name for s in new.servers if s.name != "c5-2xlarge-001"]
    for name in added:  # created in step 1, waited for (read until rolled out) before step 2
        created = calls.index(("PATCH", "Deployment", name))
        reads = [i for i, c in enumerate(calls) if c == ("GET", "Deployment", name)]
        assert created < applies[0] and reads and max(reads) < applies[1], calls
    assert all(("Deployment", name) in api.objects for name in added)


def _first_manifests(plan: Path) -> dict[str, list[dict[str, Any]]]:
    from inferpack.deploy.k8s_workload import ManifestConfig
    from inferpack.deploy.kubernetes import build_manifests
    from inferpack.deploy.spec import server_specs

    shapes = {"c5.2xlarge": (None, 0, 8, 16.0)}
    specs = server_specs(read_plan(plan), "s3://bucket/models", shapes)
    config = ManifestConfig(image="img:1", namespace=NAMESPACE, plan_name="fleet")
    return build_manifests(specs, config)


def _run_controller(
    tmp_path: Path, api_url: str, server_url: str, plan: Path, profiles: Path, catalog: Path
) -> tuple[str, int]:
    """``inferpack controller --steps 1`` against the fake API while load runs."""
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig.yaml", api_url)
    stop = threading.Event()
    load = threading.Thread(target=_load, args=(server_url, stop), daemon=True)
    load.start()
    try:
        done = _deploy(
            tmp_path, "controller", "--plan", str(plan), "--profiles", str(profiles),
            "--model-repository", "s3://bucket/models", "--image", "img:1",
            "--fleet-name", "fleet", "--namespace", NAMESPACE, "--interval-s", "4",
            "--headroom", "0.2", "--max-moves", "5", "--catalog", str(catalog),
            "--region", REGION, "--kubeconfig", str(kubeconfig),
            "--rollout-timeout-s", "60", "--steps", "1",
        )  # fmt: skip
    finally:
        stop.set()
        load.join(timeout=10)
    return done.stdout + done.stderr, done.returncode


def _load(url: str, stop: threading.Event) -> None:
    """~40 requests a second to mlp-a until ``stop``."""
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    inputs = [httpclient.InferInput("input", [1, 16], "FP32")]
    inputs[0].set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    while not stop.is_set():
        client.infer("mlp-a", inputs)
        time.sleep(0.025)


def test_the_controller_manifests_validate_and_its_role_stays_in_the_namespace() -> None:
    import kubernetes_validate

    from inferpack.deploy.k8s_controller import controller_manifests
    from inferpack.deploy.k8s_workload import ManifestConfig

    config = ManifestConfig(image="img:1", namespace=NAMESPACE, plan_name="fleet")
    objects = controller_manifests(config, ["--fleet-name", "fleet"], "profiles: []\n", "x\n")
    kinds = [o["kind"] for o in objects]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment"]
    assert "ClusterRole" not in kinds
    for document in objects:
        assert document["metadata"]["namespace"] == NAMESPACE
        for version in ("1.28.0", kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(document, version, strict=True)
    deployment = objects[-1]
    assert deployment["spec"]["replicas"] == 1
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "controller" and "--plan" in args and "--profiles" in args
    role = objects[1]
    pods = next(r for r in role["rules"] if r["resources"] == ["pods"])
    assert pods["verbs"] == ["get", "list", "watch"]
