"""The object-store artifact cache on disk: private, per repository, no symlinks, checked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from inferpack.errors import ConfigError
from inferpack.repository.cache import (
    META_SUFFIX,
    ArtifactCache,
    RemoteFile,
    default_cache_root,
    namespace,
)

URL = "s3://bucket/models"
REMOTE = RemoteFile(f"{URL}/m/1/model.pt", 5, "ETag:abc")


def _cache(root: Path, url: str = URL) -> ArtifactCache:
    cache = ArtifactCache(root, url)
    cache.open()
    return cache


def _store(cache: ArtifactCache, data: bytes = b"bytes", remote: RemoteFile = REMOTE) -> Path:
    local = cache.locate("m", "1", "model.pt")
    with cache.writing(local, remote) as tmp:
        tmp.write_bytes(data)
    return local


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_default_root_is_per_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_root({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "inferpack"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "inferpack"
    assert default_cache_root({}) == expected
    assert default_cache_root({"XDG_CACHE_HOME": "relative/dir"}) == expected  # ignored


def test_each_repository_gets_its_own_private_folder(tmp_path: Path) -> None:
    one, other = _cache(tmp_path / "c"), _cache(tmp_path / "c", "s3://bucket/other")
    assert one.dir != other.dir
    assert one.dir == tmp_path / "c" / namespace(URL)
    local = _store(one)
    assert local == one.dir / "m" / "1" / "model.pt"
    for folder in (tmp_path / "c", one.dir, one.dir / "m", one.dir / "m" / "1"):
        assert _mode(folder) == 0o700, folder


def test_a_stored_artifact_is_current_until_its_bytes_or_the_remote_change(
    tmp_path: Path,
) -> None:
    cache = _cache(tmp_path)
    local = _store(cache)
    assert local.read_bytes() == b"bytes"
    assert cache.is_current(local, REMOTE)
    assert not cache.is_current(local, RemoteFile(REMOTE.url, 5, "ETag:new"))
    assert not cache.is_current(local, RemoteFile(REMOTE.url, 6, REMOTE.fingerprint))
    assert not cache.is_current(local, RemoteFile(REMOTE.url, 5, None))  # can't tell
    local.write_bytes(b"bytez")  # same size, other content: tampered
    assert not cache.is_current(local, REMOTE)


def test_a_failed_download_leaves_the_cached_copy_alone(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    local = _store(cache)
    with pytest.raises(RuntimeError), cache.writing(local, REMOTE) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("connection reset")
    assert local.read_bytes() == b"bytes" and cache.is_current(local, REMOTE)
    assert sorted(p.name for p in local.parent.iterdir()) == ["model.pt", "model.pt" + META_SUFFIX]


def test_a_symlinked_artifact_is_never_followed(tmp_path: Path) -> None:
    cache = _cache(tmp_path / "cache")
    local = _store(cache)
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"bytes")  # the very bytes the sidecar records
    local.unlink()
    local.symlink_to(elsewhere)
    assert not cache.is_current(local, REMOTE)
    _store(cache, b"fresh")
    assert not local.is_symlink() and local.read_bytes() == b"fresh"
    assert elsewhere.read_bytes() == b"bytes"  # the link was replaced, its target untouched


def test_a_symlinked_sidecar_is_not_trusted(tmp_path: Path) -> None:
    cache = _cache(tmp_path / "cache")
    local = _store(cache)
    meta = local.with_name(local.name + META_SUFFIX)
    planted = tmp_path / "planted.json"
    planted.write_bytes(meta.read_bytes())
    meta.unlink()
    meta.symlink_to(planted)
    assert not cache.is_current(local, REMOTE)


def test_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    cache = _cache(tmp_path / "cache")
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    (cache.dir / "m").symlink_to(target)
    with pytest.raises(ConfigError, match="symlink"):
        cache.locate("m", "1", "model.pt")
    assert list(target.iterdir()) == []


def test_a_root_others_can_write_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by group or others"):
        _cache(root)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs chown (root)")
def test_a_root_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "theirs"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    with pytest.raises(ConfigError, match="another user"):
        _cache(root)
