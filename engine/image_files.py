"""Where image files live (`ImageStore`): a folder on the local disk (a shared volume when bots and workers
run on different machines). Keys are relative paths such as `images/0/12/1.png`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ImageStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        # Resolved once: every key is checked against it (a relative root means the folder
        # under the working directory when the store was made, even if the process changes directory later).
        self._resolved_root = self.root.resolve()

    @staticmethod
    def key_for(generation_id: int, name: str) -> str:
        # Bucket by thousands so no folder grows without bound.
        return f"{generation_id // 1000}/{generation_id}/{name}"

    def path(self, key: str) -> Path:
        path = (self._resolved_root / key).resolve()
        if self._resolved_root not in path.parents:
            raise ValueError(f"storage key escapes the image folder: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> str:
        """Write one file: see `put_all`."""
        return self.put_all([(key, data)])[0]

    def put_all(self, files: list[tuple[str, bytes]]) -> list[str]:
        """Write each (key, data) atomically (temp file + rename) and durably: a crash never
        leaves half a PNG, and once this returns the files and their names survive a power loss
        or a kernel crash of this machine — the job's row, committed next, points at them. Each
        file is fsynced before its rename, then every folder whose entries changed, once."""
        changed: dict[Path, None] = {}  # ordered, without repeats
        for key, data in files:
            path = self.path(key)
            for folder in _make_folders(path.parent):
                changed[folder] = None
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(temp, path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            changed[path.parent] = None
        for folder in changed:
            _fsync_folder(folder)
        return [key for key, _ in files]

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and any missing parents; returns the parents of those created (the
    folders whose entries changed), deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)  # another writer may create it meanwhile
    return [new.parent for new in missing]


def _fsync_folder(folder: Path) -> None:
    """Make a folder's entries (a renamed or created name in it) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
