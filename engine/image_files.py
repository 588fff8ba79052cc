"""Where image files live (`ImageStore`): a folder on the local disk (a shared volume when bots and workers
run on different machines). Keys are relative paths such as `images/0/12/1.png`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ImageStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @staticmethod
    def key_for(generation_id: int, name: str) -> str:
        # Bucket by thousands so no folder grows without bound.
        return f"{generation_id // 1000}/{generation_id}/{name}"

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the image folder: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> str:
        """Write atomically (temp file + rename): a crash never leaves half a PNG."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
