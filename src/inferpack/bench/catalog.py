"""Instance price catalogue: shapes and hourly prices, each with its basis, region and date.

The packaged ``data/instances.yaml`` is read first, then an optional user override file
(YAML or JSON, same layout: ``instances: [...]``). An override entry replaces or adds the
entry with the same ``(name, region)``; for an existing key it only needs the fields it
changes, but a new price needs its own ``price_date`` and ``source``. Every problem of every
entry is reported at once, as one ``ConfigError``.

``get(name)`` without a region picks us-east-1, then on-demand, then the newest price_date.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from inferpack.errors import ConfigError

BASES = ("on-demand", "reserved", "spot")
DEFAULT_REGION = "us-east-1"
PACKAGED_LABEL = "inferpack/bench/data/instances.yaml"

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class PricePoint:
    """An earlier price of the same instance, region and basis (informational)."""

    price_usd_per_hour: float
    price_date: dt.date
    source: str
    notes: str | None = None


@dataclass(frozen=True)
class InstanceType:
    name: str
    region: str
    basis: str
    price_usd_per_hour: float
    price_date: dt.date
    source: str
    vcpu: int
    memory_gib: float
    accelerator: str | None
    accelerator_count: int
    accelerator_memory_gib: float | None  # total over all accelerators; None: unknown
    notes: str | None = None
    price_history: tuple[PricePoint, ...] = ()  # newest first


def _rule(ok: Callable[[Any], bool], why: str) -> Check:
    return lambda v: None if ok(v) else why


def _optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_date(v: Any) -> bool:
    try:
        return isinstance(v, dt.date) or bool(dt.date.fromisoformat(v))
    except (TypeError, ValueError):
        return False


def _as_date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    return v if isinstance(v, dt.date) else dt.date.fromisoformat(v)


_positive = _rule(lambda v: _number(v) and v > 0, "must be a number > 0")
_non_negative = _rule(lambda v: _number(v) and v >= 0, "must be a number >= 0")
_count = _rule(lambda v: _number(v) and v >= 0 and isinstance(v, int), "must be an integer >= 0")
_text = _rule(lambda v: isinstance(v, str) and bool(v.strip()), "must be a non-empty string")
_date = _rule(_is_date, "must be an ISO date (YYYY-MM-DD)")
_basis = _rule(lambda v: v in BASES, f"must be one of {', '.join(BASES)}")

# fmt: off
_HISTORY_FIELDS: dict[str, Check] = {
    "price_usd_per_hour": _positive, "price_date": _date, "source": _text,
    "notes": _optional(_text),
}
_FIELDS: dict[str, Check] = {
    "name": _text, "region": _text, "basis": _basis, "price_usd_per_hour": _positive,
    "price_date": _date, "source": _text, "vcpu": _count, "memory_gib": _non_negative,
    "accelerator": _optional(_text), "accelerator_count": _count,
    "accelerator_memory_gib": _optional(_non_negative), "notes": _optional(_text),
    "price_history": _rule(lambda v: isinstance(v, list), "must be a list"),
}
# fmt: on
# A CPU instance names no accelerator: the three accelerator fields default to none, 0 and 0.
_OPTIONAL = {
    "notes",
    "price_history",
    "accelerator",
    "accelerator_count",
    "accelerator_memory_gib",
}


def _check(raw: Mapping[str, Any], fields: Mapping[str, Check], where: str) -> list[str]:
    problems = [f"{where}: unknown field {key!r}" for key in raw if key not in fields]
    for key, check in fields.items():
        if key not in raw:
            if key not in _OPTIONAL:
                problems.append(f"{where}: missing field {key!r}")
        elif (why := check(raw[key])) is not None:
            problems.append(f"{where}: field {key!r} {why}, got {raw[key]!r}")
    return problems


def _check_entry(raw: Mapping[str, Any], where: str) -> list[str]:
    problems = _check(raw, _FIELDS, where)
    for i, item in enumerate(raw.get("price_history") or []):
        at = f"{where}: price_history[{i}]"
        if isinstance(item, Mapping):
            problems += _check(item, _HISTORY_FIELDS, at)
        else:
            problems.append(f"{at}: must be a mapping, got {item!r}")
    accel = raw.get("accelerator")
    if accel is not None and "accelerator_count" not in raw:
        problems.append(f"{where}: accelerator {accel!r} needs 'accelerator_count' (>= 1)")
        return problems
    count = raw.get("accelerator_count", 0)
    valid = _optional(_text)(accel) is None and _count(count) is None
    if valid and (accel is None) != (count == 0):
        problems.append(
            f"{where}: accelerator {accel!r} does not agree with accelerator_count {count!r} "
            "(no accelerator needs count 0, an accelerator needs count >= 1)"
        )
    return problems


def _build(raw: Mapping[str, Any]) -> InstanceType:
    values: dict[str, Any] = {key: raw.get(key) for key in _FIELDS}
    if values["accelerator"] is None:
        # A CPU instance: no accelerator, count 0, no accelerator memory.
        values["accelerator_count"] = values["accelerator_count"] or 0
        if "accelerator_memory_gib" not in raw:
            values["accelerator_memory_gib"] = 0
    for key in ("price_usd_per_hour", "memory_gib", "accelerator_memory_gib"):
        values[key] = None if values[key] is None else float(values[key])
    values["price_date"] = _as_date(values["price_date"])
    values["price_history"] = tuple(
        PricePoint(float(h["price_usd_per_hour"]), _as_date(h["price_date"]), h["source"],
                   h.get("notes"))
        for h in values["price_history"] or []
    )  # fmt: skip
    return InstanceType(**values)


def _entries(document: Any, label: str, problems: list[str]) -> list[Any]:
    items = document.get("instances") if isinstance(document, Mapping) else document
    if not isinstance(items, list):
        problems.append(f"{label}: expected a list of instances under 'instances'")
        return []
    return items


def _read_override(path: Path, problems: list[str]) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return []
    except (ValueError, yaml.YAMLError) as exc:
        problems.append(f"{path}: cannot parse: {exc}")
        return []
    return _entries(document, str(path), problems)


def _merge(
    label: str, items: list[Any], merged: dict[tuple[str, str], dict[str, Any]]
) -> list[str]:
    """Validate one file's entries and merge the good ones into ``merged`` by (name, region)."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        where = f"{label}: instances[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: must be a mapping, got {item!r}")
            continue
        name, region = item.get("name"), item.get("region")
        where += f" ({name} in {region})"
        if not (isinstance(name, str) and name and isinstance(region, str) and region):
            problems.append(f"{where}: 'name' and 'region' must both be given as text")
            continue
        key = (name, region)
        if key in seen:
            problems.append(f"{where}: duplicate entry for this name and region")
            continue
        seen.add(key)
        base = merged.get(key, {})
        if base and "price_usd_per_hour" in item:
            missing = [f for f in ("price_date", "source") if f not in item]
            problems += [f"{where}: a new price needs its own {f!r}" for f in missing]
        entry = {**base, **item}
        found = _check_entry(entry, where)
        problems += found
        if not found:
            merged[key] = entry
    return problems


def _default_rank(item: InstanceType) -> tuple[bool, bool, int, str]:
    """Lowest wins: us-east-1, then on-demand, then the newest price_date, then region."""
    on_demand = item.basis == "on-demand"
    return (item.region != DEFAULT_REGION, not on_demand, -item.price_date.toordinal(), item.region)


class Catalog:
    """Instance types keyed by ``(name, region)``."""

    def __init__(self, instances: Iterable[InstanceType]) -> None:
        self._by_key = {(i.name, i.region): i for i in instances}

    @classmethod
    def load(cls, override_path: Path | None = None) -> Catalog:
        """The packaged catalogue, with ``override_path`` (YAML or JSON) merged on top."""
        problems: list[str] = []
        packaged = resources.files("inferpack.bench").joinpath("data/instances.yaml")
        document = yaml.safe_load(packaged.read_text(encoding="utf-8"))
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        problems += _merge(PACKAGED_LABEL, _entries(document, PACKAGED_LABEL, problems), merged)
        if override_path is not None:
            items = _read_override(override_path, problems)
            problems += _merge(str(override_path), items, merged)
        if problems:
            raise ConfigError(problems)
        return cls(_build(raw) for raw in merged.values())

    def get(self, name: str, region: str | None = None) -> InstanceType:
        """The entry for ``name`` in ``region``; without a region, the default (see module)."""
        matches = [i for i in self._by_key.values() if i.name == name]
        if not matches:
            close = difflib.get_close_matches(name, self.names(), n=5, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "see `names()`"
            raise ConfigError([f"unknown instance type {name!r}; {hint}"])
        if region is None:
            return min(matches, key=_default_rank)
        for item in matches:
            if item.region == region:
                return item
        regions = ", ".join(sorted(i.region for i in matches))
        raise ConfigError([f"no price for {name!r} in region {region!r}; priced in: {regions}"])

    def names(self) -> list[str]:
        """Distinct instance names, sorted."""
        return sorted({name for name, _ in self._by_key})

    def __iter__(self) -> Iterator[InstanceType]:
        return iter(sorted(self._by_key.values(), key=lambda i: (i.name, i.region)))

    def __len__(self) -> int:
        return len(self._by_key)
