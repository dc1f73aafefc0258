"""``deploy --target kubernetes --previous old-plan.yaml``: the order that keeps every model served.

Applying a re-plan's manifests at once would be a race: a server Deployment that loses a
model rolls to pods without it while the Ingress still sends it there, and a Service that
gains a model routes to old pods that never loaded it. So beside the new manifests (the
top-level kustomization, the fleet's final state) the output gets ``rollout/`` with two
intermediate states and ``rollout.sh`` applying them in order:

    1-servers  every server of either plan; a kept server loads the models of both plans
               (its Deployment rolls to pods with the union; maxUnavailable 0 keeps the
               old pod until the new one is ready), added servers start with their new
               models, removed servers are untouched; routing as in the OLD plan
               -> wait until every added or changed Deployment has rolled out
    2-routing  the same servers; routing as in the NEW plan (every target already holds
               its models: the union is loaded everywhere)
    final      the new manifests (kustomization.yaml at the top): kept servers drop the
               models they lose (rolling again; their old pods hold the models until gone,
               and no route points there any more)
               -> wait until those Deployments have rolled out, then delete the removed
               servers' objects

At every moment of this order, every model has a route whose every selectable pod holds it
(``tests/unit/test_kubernetes_rollout.py`` checks it for random re-plans, across each
apply's transition, when old and new pods of a Deployment serve side by side).
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from inferpack.deploy.k8s_workload import (
    MIN_SYSTEM_RESERVED_MEMORY_MB,
    SYSTEM_RESERVED_MEMORY_SHARE,
    Manifest,
    ManifestConfig,
)
from inferpack.deploy.kubernetes import HEADER, build_manifests, kustomization
from inferpack.deploy.spec import ServerSpec

ROLLOUT_DIR = "rollout"
STEPS = ("1-servers", "2-routing")
ROLLOUT_TIMEOUT = "15m"


def union_specs(old: Sequence[ServerSpec], new: Sequence[ServerSpec]) -> list[ServerSpec]:
    """Step 1's servers: a kept server (same name in both plans) with the models of both
    (old order, then what it gains; the new plan's rates), added ones as new, removed
    ones as old."""
    before = {s.name: s for s in old}
    after = {s.name: s for s in new}
    union = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            union.append(before[name])
        elif name not in before:
            union.append(after[name])
        else:
            models = tuple(dict.fromkeys((*before[name].models, *after[name].models)))
            union.append(
                dataclasses.replace(
                    after[name],
                    models=models,
                    models_memory_mb=_union_memory_mb(before[name], after[name]),
                )
            )
    return union


def _union_memory_mb(old: ServerSpec, new: ServerSpec) -> float:
    """Memory of a kept server holding both plans' models: the old models' plus the gained
    ones' (each at the new server's mean per model: plans keep no per-model memory per
    server), at most what the instance leaves to pods (the request schedules the pod; the
    union is held only until the final step)."""
    gained = [m for m in new.models if m not in old.models]
    per_model = new.models_memory_mb / len(new.models) if new.models else 0.0
    wanted = old.models_memory_mb + per_model * len(gained)
    reserved = max(
        new.instance_memory_mb * SYSTEM_RESERVED_MEMORY_SHARE, MIN_SYSTEM_RESERVED_MEMORY_MB
    )
    room = math.floor(new.instance_memory_mb - reserved) - new.base_memory_mb
    return max(old.models_memory_mb, new.models_memory_mb, min(wanted, room))


def step_manifests(
    old: Sequence[ServerSpec], new: Sequence[ServerSpec], config: ManifestConfig
) -> dict[str, dict[str, list[Manifest]]]:
    """Step name → file name → objects, for the two intermediate steps."""
    union = build_manifests(union_specs(old, new), config)
    servers = {name: objects for name, objects in union.items() if name.startswith("servers/")}
    return {
        STEPS[0]: {**servers, "routing.yaml": build_manifests(old, config)["routing.yaml"]},
        STEPS[1]: {**servers, "routing.yaml": build_manifests(new, config)["routing.yaml"]},
    }


def rollout_texts(
    old: Sequence[ServerSpec], new: Sequence[ServerSpec], config: ManifestConfig
) -> dict[str, str]:
    """The files of ``rollout/`` (relative to the output folder), and ``rollout.sh``."""
    texts: dict[str, str] = {}
    for step, files in step_manifests(old, new, config).items():
        for name, objects in files.items():
            texts[f"{ROLLOUT_DIR}/{step}/{name}"] = HEADER + yaml.safe_dump_all(
                objects, sort_keys=False
            )
        texts[f"{ROLLOUT_DIR}/{step}/kustomization.yaml"] = HEADER + yaml.safe_dump(
            kustomization(list(files), config), sort_keys=False
        )
    texts["rollout.sh"] = _script(old, new, config)
    return texts


@dataclass(frozen=True)
class Rollout:
    """What changes, by server name: Deployments added or gaining models (waited for after
    step 1), kept ones losing models (waited for after the final apply), servers removed
    (deleted last)."""

    grows: tuple[str, ...]
    shrinks: tuple[str, ...]
    removed: tuple[str, ...]


def rollout_of(old: Sequence[ServerSpec], new: Sequence[ServerSpec]) -> Rollout:
    before = {s.name: s for s in old}
    after = {s.name: s for s in new}
    return Rollout(
        grows=tuple(
            n
            for n in sorted(after)
            if n not in before or set(after[n].models) - set(before[n].models)
        ),
        shrinks=tuple(
            n for n in sorted(after) if n in before and set(before[n].models) - set(after[n].models)
        ),
        removed=tuple(n for n in sorted(before) if n not in after),
    )


def _script(old: Sequence[ServerSpec], new: Sequence[ServerSpec], config: ManifestConfig) -> str:
    change = rollout_of(old, new)
    namespace = f" -n {shlex.quote(config.namespace)}" if config.namespace else ""

    def wait(names: Sequence[str]) -> list[str]:
        return [
            f"kubectl rollout status{namespace} deployment/{name} --timeout={ROLLOUT_TIMEOUT}"
            for name in names
        ]

    lines = [
        "#!/bin/sh",
        "# Generated by `inferpack deploy --target kubernetes --previous`: applies the re-plan",
        "# in an order that keeps every model served by a ready pod (deploy/k8s_rollout.py).",
        "set -eu",
        'cd "$(dirname "$0")"',
        f"# 1. servers with the models of both plans ({len(change.grows)} added or growing), "
        "old routing",
        f"kubectl apply -k {ROLLOUT_DIR}/{STEPS[0]}",
        *wait(change.grows),
        "# 2. routing of the new plan",
        f"kubectl apply -k {ROLLOUT_DIR}/{STEPS[1]}",
        f"# 3. the new plan: {len(change.shrinks)} server(s) drop models, then "
        f"{len(change.removed)} removed",
        "kubectl apply -k .",
        *wait(change.shrinks),
        *(
            f"kubectl delete{namespace} -f {ROLLOUT_DIR}/{STEPS[0]}/servers/{name}.yaml "
            "--ignore-not-found"
            for name in change.removed
        ),
        'echo "re-plan applied"',
    ]
    return "\n".join(lines) + "\n"
