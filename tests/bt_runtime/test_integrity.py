"""The verified-digest cache: a file verified once is not hashed again while the filesystem says it is the same
file version; any change to it (content, size, a touch) is hashed and judged again; off means every load hashes."""

from __future__ import annotations

import os

import pytest

from bt_runtime import ManifestError, integrity
from bt_runtime.integrity import sha256_file, verify_sha256


@pytest.fixture
def hashes(monkeypatch):
    """Count the files actually hashed."""
    calls = []
    real = integrity.sha256_file

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(integrity, "sha256_file", counting)
    return calls


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "graph.onnx"
    path.write_bytes(b"weights" * 1000)
    return path, sha256_file(path)


def test_a_verified_unchanged_file_is_not_hashed_again(blob, hashes):
    path, sha = blob
    verify_sha256(path, sha, "")
    verify_sha256(path, sha, "")
    assert hashes == [path]
    verify_sha256(path, sha, "")
    assert len(hashes) == 1


def test_a_changed_file_is_hashed_again_and_refused(blob, hashes):
    path, sha = blob
    verify_sha256(path, sha, "")
    data = bytearray(path.read_bytes())
    data[10] ^= 1  # same size, one bit
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match the sha256"):
        verify_sha256(path, sha, "re-export")
    assert len(hashes) == 2


def test_times_set_back_still_rehash(blob, hashes):
    """Writing a file and setting its mtime back leaves the ctime changed: the content is hashed again."""
    path, sha = blob
    verify_sha256(path, sha, "")
    before = os.stat(path)
    path.write_bytes(b"Weights" + path.read_bytes()[7:])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ManifestError):
        verify_sha256(path, sha, "")


def test_another_expected_digest_is_not_taken_from_the_cache(blob, hashes):
    path, sha = blob
    verify_sha256(path, sha, "")
    with pytest.raises(ManifestError):
        verify_sha256(path, "0" * 64, "")
    assert len(hashes) == 2


@pytest.mark.parametrize("setting", ["off", "0"])
def test_off_hashes_every_time(blob, hashes, monkeypatch, setting):
    path, sha = blob
    monkeypatch.setenv("BT_DIGEST_CACHE", setting)
    verify_sha256(path, sha, "")
    verify_sha256(path, sha, "")
    assert len(hashes) == 2


def test_disabled_block_hashes_every_time(blob, hashes):
    path, sha = blob
    verify_sha256(path, sha, "")
    with integrity.disabled():
        verify_sha256(path, sha, "")
    assert len(hashes) == 2


def test_an_unusable_cache_location_is_ignored_not_an_error(blob, hashes, monkeypatch, tmp_path):
    path, sha = blob
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("BT_DIGEST_CACHE", str(tmp_path / "file" / "cache.json"))  # parent is a file
    verify_sha256(path, sha, "")
    verify_sha256(path, sha, "")
    assert len(hashes) == 2
    monkeypatch.setenv("BT_DIGEST_CACHE", str(tmp_path / "garbage.json"))
    (tmp_path / "garbage.json").write_text("{not json")
    verify_sha256(path, sha, "")
    verify_sha256(path, sha, "")
    assert len(hashes) == 3  # the garbage was replaced by a good cache
