"""The local fleet splits the host's cores between its servers and the router."""

from __future__ import annotations

from inferpack.deploy.local import LocalFleetConfig, placed_specs
from inferpack.deploy.spec import ServerSpec
from inferpack.runtime.workers import fleet_cpu_threads


def test_cores_less_the_routers_split_evenly_at_least_one_each() -> None:
    assert fleet_cpu_threads(1, cores=16) == 15
    assert fleet_cpu_threads(3, cores=16) == 5
    assert fleet_cpu_threads(1, cores=2) == 1
    assert fleet_cpu_threads(4, cores=2) == 1
    assert fleet_cpu_threads(2, cores=1) == 1
    assert fleet_cpu_threads(2) >= 1  # this host's cores


def _spec(name: str, threads: int | None = None) -> ServerSpec:
    return ServerSpec(
        name=name,
        instance_type="local",
        device="cpu",
        accelerator_count=0,
        vcpu=2,
        instance_memory_mb=1024.0,
        models=("a",),
        models_memory_mb=1.0,
        model_repository="models",
        cpu_threads=threads,
    )


def test_placed_specs_default_to_the_split_and_keep_what_is_given() -> None:
    specs = [_spec("s1"), _spec("s2", threads=3)]
    placed = placed_specs(specs, LocalFleetConfig())
    assert placed[0].cpu_threads == fleet_cpu_threads(2)
    assert placed[1].cpu_threads == 3
    forced = placed_specs(specs, LocalFleetConfig(cpu_threads=2))
    assert [s.cpu_threads for s in forced] == [2, 2]
    assert "--cpu-threads" in placed[0].argv()
