"""A ``DicomModalities`` destination: C-STORE through Orthanc, probed by C-ECHO, asked by C-FIND."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CannotAsk, OrthancError, Unreachable
from ..interface import InstanceUids
from ..transport import Transport, post_json, get_json


class Modality:
    def __init__(self, timeout: int) -> None:
        self.timeout = timeout

    def store_request(self, name: str, instance_ids: list[str]) -> tuple[str, dict[str, Any]]:
        return f"/modalities/{name}/store", {"Resources": list(instance_ids), "Asynchronous": True}

    def probe(self, orthanc: Transport, name: str) -> bool:
        post_json(orthanc, f"/modalities/{name}/echo", {})
        return True

    def holds(self, orthanc: Transport, name: str, uids: Callable[[], InstanceUids]) -> bool:
        """A C-FIND at IMAGE level through Orthanc (``POST /modalities/{m}/query``); a failed one is
        told apart (down, or up without C-FIND) by a C-ECHO."""
        asked = uids()
        body = {"Level": "Instance", "Timeout": self.timeout,  # Timeout: Orthanc 1.9.1 and later
                "Query": {"StudyInstanceUID": asked.study, "SeriesInstanceUID": asked.series,
                          "SOPInstanceUID": asked.sop_instance}}
        try:
            query = post_json(orthanc, f"/modalities/{name}/query", body)
            answers = get_json(orthanc, f"/queries/{query['ID']}/answers")
        except (OrthancError, KeyError, TypeError) as exc:
            if _refused_by_destination(exc):
                raise CannotAsk(f"modality {name} does not accept a C-FIND ({exc})") from exc
            # Other failures of a C-FIND look like network errors through Orthanc: a C-ECHO tells them apart.
            try:
                post_json(orthanc, f"/modalities/{name}/echo", {"Timeout": self.timeout})
            except OrthancError as echo_exc:
                if _refused_by_destination(echo_exc):
                    raise CannotAsk(f"modality {name} accepts neither C-FIND nor C-ECHO ({exc})") from exc
                raise Unreachable(f"modality {name}: {echo_exc}") from exc
            raise CannotAsk(f"modality {name} answers C-ECHO but not a C-FIND at IMAGE level ({exc})") from exc
        return bool(answers)


def _refused_by_destination(exc: Exception) -> bool:
    """The modality answered the association but supports no such service: it is up, it cannot be asked."""
    return "presentation context" in str(exc).lower()
