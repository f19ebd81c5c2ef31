"""Verify before resend: ask a destination whether it already holds an instance.

After a crash (or when Orthanc forgot a job) the router cannot know whether a forward
that was in flight reached its destination: the receiver may have stored the instance
just before the sender died. Sending it again blindly would deliver it twice, so the
forwarder first asks the destination:

* an Orthanc peer: ``POST {Url}/tools/lookup`` with the SOP Instance UID, over HTTP with
  the credentials of its ``OrthancPeers`` entry (the standard library's ``urllib``;
  Orthanc 1.10 has no REST route that proxies an arbitrary call to a peer);
* a DICOM modality: a C-FIND at IMAGE level through Orthanc (``POST /modalities/{m}/query``
  with the study, series and SOP Instance UIDs).

Three outcomes: the destination holds it (the delivery is recorded without resending), it
does not (resend), or it cannot be asked. :class:`Unreachable` means the destination is
down (ask again later; resending would not get through either). :class:`CannotAsk` means it
is up but does not answer the question (a modality without a C-FIND SCP, a peer refusing
the lookup, a DICOMweb server): the router then resends, at least once rather than lose it.

This module never imports ``orthanc``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Destination
from .delivery import CannotAsk, Rest, RestError, Unreachable

#: Seconds allowed for one question (HTTP request, C-FIND or C-ECHO). Short, because the
#: forwarding thread waits for it and Orthanc's shutdown must not.
TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class PeerAccess:
    """How to reach an ``OrthancPeers`` entry over HTTP."""

    url: str
    username: str | None = None
    password: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def peers_from_config(orthanc_config: Mapping[str, Any]) -> dict[str, PeerAccess]:
    """``OrthancPeers`` entries, in either of Orthanc's forms (``[url, user, password]`` or an object)."""
    out: dict[str, PeerAccess] = {}
    for name, entry in (orthanc_config.get("OrthancPeers") or {}).items():
        if isinstance(entry, list) and entry:
            out[str(name)] = PeerAccess(str(entry[0]), *(str(v) for v in entry[1:3]))
        elif isinstance(entry, Mapping) and entry.get("Url"):
            out[str(name)] = PeerAccess(str(entry["Url"]), entry.get("Username"), entry.get("Password"),
                                        {str(k): str(v) for k, v in (entry.get("HttpHeaders") or {}).items()})
    return out


@dataclass
class DestinationLookup:
    """Answers "does ``destination`` already hold this instance?" (see the module docstring)."""

    rest: Rest
    peers: Mapping[str, PeerAccess]
    timeout: int = TIMEOUT_SECONDS

    def holds(self, destination: Destination, instance_id: str) -> bool:
        """True if the destination holds the instance; raises :class:`Unreachable` or :class:`CannotAsk`."""
        if destination.kind == "peer":
            return self._peer_holds(destination.name, self._uids(instance_id)[2])
        if destination.kind == "modality":
            return self._modality_holds(destination.name, *self._uids(instance_id))
        raise CannotAsk(f"{destination.kind} destinations cannot be asked which instances they hold")

    def _uids(self, instance_id: str) -> tuple[str, str, str]:
        """(StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) of an instance stored in this Orthanc."""
        instance = self.rest.get_json(f"/instances/{instance_id}")
        series = self.rest.get_json(f"/series/{instance['ParentSeries']}")
        study = self.rest.get_json(f"/studies/{series['ParentStudy']}")
        return (study["MainDicomTags"]["StudyInstanceUID"], series["MainDicomTags"]["SeriesInstanceUID"],
                instance["MainDicomTags"]["SOPInstanceUID"])

    # -- Orthanc peers ------------------------------------------------------------------
    def _peer_holds(self, name: str, sop_instance_uid: str) -> bool:
        peer = self.peers.get(name)
        if peer is None:
            raise CannotAsk(f"OrthancPeers.{name} has no Url the router can read")
        request = urllib.request.Request(peer.url.rstrip("/") + "/tools/lookup",
                                         data=sop_instance_uid.encode(), method="POST",
                                         headers={"Content-Type": "text/plain", **peer.headers})
        if peer.username is not None:
            token = base64.b64encode(f"{peer.username}:{peer.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 (configured URL)
                found = json.loads(answer.read() or b"[]")
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise Unreachable(f"peer {name}: HTTP {exc.code}") from exc
            raise CannotAsk(f"peer {name} refused POST /tools/lookup: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:  # URLError, timeouts, connection refused, bad JSON
            raise Unreachable(f"peer {name}: {exc}") from exc
        return any(isinstance(x, Mapping) and x.get("Type") == "Instance" for x in found or [])

    # -- DICOM modalities -----------------------------------------------------------------
    def _modality_holds(self, name: str, study: str, series: str, sop_instance_uid: str) -> bool:
        body = {"Level": "Instance", "Timeout": self.timeout,  # Timeout: Orthanc 1.9.1 and later
                "Query": {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": sop_instance_uid}}
        try:
            query = self.rest.post_json(f"/modalities/{name}/query", body)
            answers = self.rest.get_json(f"/queries/{query['ID']}/answers")
        except (RestError, KeyError, TypeError) as exc:
            if _refused_by_destination(exc):
                raise CannotAsk(f"modality {name} does not accept a C-FIND ({exc})") from exc
            # Other failures of a C-FIND look like network errors through Orthanc: a C-ECHO tells them apart.
            try:
                self.rest.post_json(f"/modalities/{name}/echo", {"Timeout": self.timeout})
            except RestError as echo_exc:
                if _refused_by_destination(echo_exc):
                    raise CannotAsk(f"modality {name} accepts neither C-FIND nor C-ECHO ({exc})") from exc
                raise Unreachable(f"modality {name}: {echo_exc}") from exc
            raise CannotAsk(f"modality {name} answers C-ECHO but not a C-FIND at IMAGE level ({exc})") from exc
        return bool(answers)


def _refused_by_destination(exc: Exception) -> bool:
    """The modality answered the association but supports no such service: it is up, it cannot be asked."""
    return "presentation context" in str(exc).lower()
