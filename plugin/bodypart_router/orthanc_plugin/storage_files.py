"""Where Orthanc keeps an instance's file, so that the classifier process can read it itself.

Fetching a 15 MB file over Orthanc's REST API copies it into Orthanc's heap (and, with 1.10's
Python plugin, holds the interpreter lock meanwhile). With Orthanc's default storage the file
is simply ``StorageDirectory/ab/cd/abcd...`` named after the attachment's UUID, so the child
process is given that path instead. The path is used only when its size matches what Orthanc
recorded for an uncompressed attachment; with ``StorageCompression`` or a storage plugin
(PostgreSQL large objects, S3...) the file's bytes are fetched over REST as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from ..orthanc_api import OrthancError
from ..inference.engine import Source
from .host import OrthancRest

LOGGER = logging.getLogger(__name__)


class StorageFiles:
    def __init__(self, rest: OrthancRest, orthanc_config: Mapping[str, Any], config_dir: Path) -> None:
        self.rest = rest
        root = Path(str(orthanc_config.get("StorageDirectory") or "OrthancStorage")).expanduser()
        self.root = root if root.is_absolute() else config_dir / root
        self.enabled = not orthanc_config.get("StorageCompression", False)
        self._direct: bool | None = None  # last outcome, to log only when it changes

    def source(self, instance_id: str) -> Source:
        """The file's path when it can be read directly, else its bytes. Raises
        :class:`OrthancError` (404 when the instance was deleted)."""
        path = self._path(instance_id) if self.enabled else None
        if path is not None:
            self._note(True, "")
            return str(path)
        return self.rest.get(f"/instances/{instance_id}/file")

    def _path(self, instance_id: str) -> Path | None:
        info = self.rest.get_json(f"/instances/{instance_id}/attachments/dicom/info")
        uuid, size = str(info.get("Uuid", "")), info.get("CompressedSize")
        if len(uuid) < 5 or size is None or info.get("UncompressedSize") != size:
            self._note(False, "the attachment is compressed")
            return None
        path = self.root / uuid[:2] / uuid[2:4] / uuid
        try:
            if path.stat().st_size == size:
                return path
        except OSError:
            pass
        self._note(False, f"{path} is not the stored file (a storage plugin?)")
        return None

    def _note(self, direct: bool, why: str) -> None:
        if direct != self._direct:
            self._direct = direct
            LOGGER.info("the classifier reads files from the storage directory" if direct
                else f"the classifier fetches files over REST: {why}")


__all__ = ["StorageFiles", "OrthancError"]
