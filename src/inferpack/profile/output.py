"""profiles.yaml updated in place: a new measurement replaces the entry of its (kind,
instance_type, models_per_server) and leaves every other entry, and the file's other
top-level keys, as they were. The file is read before measuring (:func:`read_existing`)
so that a broken file fails in a second instead of after the search."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inferpack.errors import ConfigError
from inferpack.plan.formats import Profile, parse_profiles, profile_key, write_profiles


@dataclass(frozen=True, slots=True)
class ProfilesFile:
    """What a profiles.yaml held: its profiles and its other top-level keys."""

    profiles: tuple[Profile, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def read_existing(path: Path) -> ProfilesFile:
    """The file's content; empty when it does not exist or is empty."""
    if not path.exists():
        return ProfilesFile()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError([f"cannot read profiles {path}: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
    if data is None:
        return ProfilesFile()
    profiles = parse_profiles(data, path)
    return ProfilesFile(tuple(profiles), {k: v for k, v in data.items() if k != "profiles"})


def merged(existing: ProfilesFile, profile: Profile) -> list[Profile]:
    """``existing``'s profiles with ``profile`` in place of its entry, or appended. An entry
    of the same kind and instance type without a model count is replaced too (a file cannot
    hold a counted and an uncounted entry of one pair)."""
    key = profile_key(profile)

    def same(p: Profile) -> bool:
        if (p.kind, p.instance_type) != key[:2]:
            return False
        return profile_key(p) == key or p.models_per_server is None or key[2] is None

    kept = [same(p) for p in existing.profiles]
    result: list[Profile] = []
    for p, replaced in zip(existing.profiles, kept, strict=True):
        if not replaced:
            result.append(p)
        elif profile not in result:
            result.append(profile)
    return result if any(kept) else [*result, profile]


def write_updated(path: Path, existing: ProfilesFile, *profiles: Profile) -> None:
    """Write ``existing`` with each of ``profiles`` merged in, in order."""
    current = existing
    for profile in profiles:
        current = ProfilesFile(tuple(merged(current, profile)), current.extra)
    write_profiles(path, current.profiles, existing.extra)
