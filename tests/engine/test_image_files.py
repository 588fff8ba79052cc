"""The image store: files written atomically and durably before the rows that point at them."""

from __future__ import annotations

import os

import pytest

from engine import image_files
from engine.image_files import ImageStore


@pytest.fixture
def fsyncs(monkeypatch):
    """Every fsync, as the path of what was synced (a file by its name at the time, or a folder)."""
    synced: list[str] = []
    real = os.fsync

    def recording(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    monkeypatch.setattr(image_files.os, "fsync", recording)
    return synced


def test_files_and_every_changed_folder_are_synced(tmp_path, fsyncs):
    """A job's files are each synced before their rename, then every folder whose entries
    changed — the new job folder, its new bucket, the new root and the root's parent — once."""
    store = ImageStore(tmp_path / "images")
    keys = store.put_all(
        [(ImageStore.key_for(1234, "a1-1.png"), b"one"), (ImageStore.key_for(1234, "a1-grid.png"), b"grid")]
    )
    assert keys == ["1/1234/a1-1.png", "1/1234/a1-grid.png"]
    assert store.get(keys[0]) == b"one" and store.get(keys[1]) == b"grid"
    job_folder = tmp_path / "images" / "1" / "1234"
    files, folders = fsyncs[:2], fsyncs[2:]
    assert all(os.path.dirname(f) == str(job_folder) and "/.tmp-" in f for f in files)  # before the rename
    assert sorted(folders) == sorted(str(p) for p in [job_folder, job_folder.parent, tmp_path / "images", tmp_path])
    assert not [p for p in job_folder.iterdir() if p.name.startswith(".tmp-")]


def test_an_existing_folder_is_the_only_one_synced(tmp_path, fsyncs):
    store = ImageStore(tmp_path / "images")
    store.put(ImageStore.key_for(7, "a1-1.png"), b"first")
    fsyncs.clear()
    store.put(ImageStore.key_for(7, "a1-2.png"), b"second")
    assert fsyncs[1:] == [str(tmp_path / "images" / "0" / "7")]


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    """A write that fails (a full disk, an I/O error at fsync) raises and leaves neither the
    file nor its temporary."""
    store = ImageStore(tmp_path / "images")

    def full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_files.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        store.put(ImageStore.key_for(7, "a1-1.png"), b"data")
    assert list((tmp_path / "images" / "0" / "7").iterdir()) == []


def test_keys_cannot_escape_the_folder(tmp_path):
    with pytest.raises(ValueError, match="escapes"):
        ImageStore(tmp_path / "images").put("../outside.png", b"x")


def test_a_relative_root_stays_the_folder_it_named(tmp_path, monkeypatch):
    """A store made with a relative root keeps reading and writing the folder it named when the
    process changes directory later (the root is resolved once, not on every key)."""
    monkeypatch.chdir(tmp_path)
    store = ImageStore("images")
    store.put("0/1/a.png", b"png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert store.get("0/1/a.png") == b"png"
    store.put("0/2/b.png", b"more")
    assert (tmp_path / "images" / "0" / "2" / "b.png").read_bytes() == b"more"
    assert not (elsewhere / "images").exists()
    with pytest.raises(ValueError, match="escapes"):
        store.path("../outside.png")
