"""A DICOMweb server (``DicomWeb.Servers``, with Orthanc's DICOMweb plugin): STOW-RS through Orthanc.

It is neither probed (a forward is its probe) nor asked what it holds: a forward of unknown
outcome to it is sent again, at least once rather than lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CannotAsk
from ..interface import InstanceUids
from ..transport import Transport


class DicomWebServer:
    def store_request(self, name: str, instance_ids: list[str]) -> tuple[str, dict[str, Any]]:
        return f"/dicom-web/servers/{name}/stow", {"Resources": list(instance_ids), "Synchronous": False}

    def probe(self, orthanc: Transport, name: str) -> bool:
        return False

    def holds(self, orthanc: Transport, name: str, uids: Callable[[], InstanceUids]) -> bool:
        raise CannotAsk("dicomweb destinations cannot be asked which instances they hold")
