"""ServerSpec: one planned server as the ``inferpack serve`` command that runs it.

Both deploy targets read this and nothing else: Kubernetes puts ``argv()`` in a
Deployment's container, the local target starts it as a process (ports filled in). The
device kind (cpu / cuda / neuron) comes from the instance type in the price catalogue.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from inferpack.plan.formats import Plan, ServerPlan

DEVICE_KINDS = ("cpu", "cuda", "neuron")
# Process baseline (Python, torch, aiohttp, grpc) added to the models' memory for requests.
SERVER_BASE_MEMORY_MB = 600.0
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


def device_kind(accelerator: str | None) -> str:
    """cpu, cuda or neuron from a catalogue ``accelerator`` field."""
    if not accelerator:
        return "cpu"
    text = accelerator.lower()
    if "inferentia" in text or "trainium" in text or "neuron" in text:
        return "neuron"
    return "cuda"


def dns_label(text: str) -> str:
    """A Kubernetes-safe name: lowercase, [a-z0-9-], at most 63 characters."""
    label = _DNS_LABEL.sub("-", text.lower()).strip("-")
    return label[:63].rstrip("-") or "server"


@dataclass(frozen=True)
class ServerSpec:
    name: str  # DNS label, unique within the plan
    instance_type: str
    device: str  # cpu | cuda | neuron
    accelerator_count: int
    vcpu: int
    instance_memory_mb: float
    models: tuple[str, ...]
    models_memory_mb: float
    model_repository: str
    http_port: int = 8000
    grpc_port: int = 8001
    host: str = "0.0.0.0"
    cpu_threads: int | None = None
    kinds: tuple[tuple[str, str], ...] = ()  # (model, kind) from the plan, for the router
    rates: tuple[tuple[str, float], ...] = ()  # (model, planned rps) on this server
    base_memory_mb: float = SERVER_BASE_MEMORY_MB  # the process, beside its models (plan's)

    def argv(self, executable: str = "inferpack") -> list[str]:
        """The serve command; models are loaded at start and stay (explicit control)."""
        args = [
            executable,
            "serve",
            "--model-repository",
            self.model_repository,
            "--host",
            self.host,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--model-control-mode",
            "explicit",
        ]
        if self.cpu_threads:
            args += ["--cpu-threads", str(self.cpu_threads)]
        for model in self.models:
            args += ["--load-model", model]
        return args

    @property
    def memory_request_mb(self) -> int:
        """What the pod asks for: its models plus the process baseline the plan packed with
        (plan.yaml's server_overhead_mb; 600 MB for a plan written without it)."""
        return math.ceil(self.models_memory_mb + self.base_memory_mb)


Shapes = dict[str, tuple[str | None, int, int, float]]


def catalog_shapes(catalog: object, names: Iterable[str], region: str | None = None) -> Shapes:
    """Instance type -> (accelerator, accelerator_count, vcpu, memory_gib) from the price
    catalogue, what :func:`server_specs` takes; a type the catalogue lacks is its error."""
    from inferpack.bench.catalog import Catalog

    assert isinstance(catalog, Catalog)
    shapes: Shapes = {}
    for name in sorted(set(names)):
        entry = catalog.get(name, region)
        shapes[name] = (entry.accelerator, entry.accelerator_count, entry.vcpu, entry.memory_gib)
    return shapes


def server_specs(
    plan: Plan,
    model_repository: str,
    instances: Shapes,
) -> list[ServerSpec]:
    """One spec per planned server.

    ``instances`` maps instance type → (accelerator, accelerator_count, vcpu, memory_gib),
    from the catalogue; a type missing there is a clear error.
    """
    overhead = plan.plan.server_overhead_mb
    base_mb = SERVER_BASE_MEMORY_MB if overhead is None else overhead
    return [
        replace(_spec(server, model_repository, instances), base_memory_mb=base_mb)
        for server in plan.servers
    ]


def _spec(
    server: ServerPlan,
    model_repository: str,
    instances: Shapes,
) -> ServerSpec:
    from inferpack.errors import ConfigError

    if server.instance_type not in instances:
        raise ConfigError(
            [f"server {server.name}: instance type {server.instance_type} is not in the catalogue"]
        )
    accelerator, count, vcpu, memory_gib = instances[server.instance_type]
    models = tuple(dict.fromkeys(m.name for m in server.models))
    return ServerSpec(
        name=dns_label(server.name),
        instance_type=server.instance_type,
        device=device_kind(accelerator),
        accelerator_count=count if accelerator else 0,
        vcpu=vcpu,
        instance_memory_mb=memory_gib * 1024,
        models=models,
        models_memory_mb=server.memory_mb,
        model_repository=model_repository,
        kinds=tuple(dict.fromkeys((m.name, m.kind) for m in server.models)),
        rates=tuple((m.name, m.rps) for m in server.models),
    )
