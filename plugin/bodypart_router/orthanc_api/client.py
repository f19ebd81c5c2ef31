"""The :class:`~.interface.Orthanc` interface over Orthanc's REST API, however it is reached.

``OrthancClient(InProcessTransport())`` is the in-process implementation the plugin runs
(``orthanc.RestApi*``, see ``orthanc_plugin/host.py``); ``OrthancClient(HttpClient(access))``
the HTTP one (cluster claims, tests). Both answer the same calls the same way, because
Orthanc's REST API is the same in both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import Destination
from .destinations import DestinationKind, kind_of, kinds
from .errors import OrthancNotFound
from .http import HttpAccess
from .interface import InstanceUids, Job, Metadata
from .transport import Transport, get_json, post_json


class OrthancClient:
    """Implements :class:`~.interface.Orthanc`; ``peers`` are the ``OrthancPeers`` the router asks directly."""

    def __init__(self, transport: Transport, peers: Mapping[str, HttpAccess] | None = None) -> None:
        self.transport = transport
        self.destination_kinds: dict[str, DestinationKind] = kinds(peers)

    # -- resources ----------------------------------------------------------------------
    def system(self) -> Mapping[str, Any]:
        return get_json(self.transport, "/system")

    def exists(self, instance_id: str) -> bool:
        try:
            self.transport.call("GET", f"/instances/{instance_id}")
        except OrthancNotFound:
            return False
        return True

    def instance_uids(self, instance_id: str) -> InstanceUids:
        instance = get_json(self.transport, f"/instances/{instance_id}")
        series = get_json(self.transport, f"/series/{instance['ParentSeries']}")
        study = get_json(self.transport, f"/studies/{series['ParentStudy']}")
        return InstanceUids(study["MainDicomTags"]["StudyInstanceUID"], series["MainDicomTags"]["SeriesInstanceUID"],
                            instance["MainDicomTags"]["SOPInstanceUID"])

    def study_instances(self, study_id: str) -> list[str]:
        return [str(i["ID"]) for i in get_json(self.transport, f"/studies/{study_id}/instances")]

    def lookup(self, uid: str) -> list[Mapping[str, Any]]:
        return list(self.transport.call("POST", "/tools/lookup", uid).json() or [])

    def find(self, query: Mapping[str, Any]) -> list[Any]:
        return list(post_json(self.transport, "/tools/find", dict(query)) or [])

    def instances(self, since: int, limit: int) -> list[str]:
        return [str(i) for i in get_json(self.transport, f"/instances?since={since}&limit={limit}")]

    # -- metadata and labels -------------------------------------------------------------
    def metadata(self, instance_id: str, name: str) -> Metadata | None:
        try:
            answer = self.transport.call("GET", f"/instances/{instance_id}/metadata/{name}")
        except OrthancNotFound:
            return None
        return Metadata(answer.body.decode(errors="replace"), answer.etag)

    def set_metadata(self, instance_id: str, name: str, value: str, *, if_match: str | None = None) -> None:
        self.transport.call("PUT", f"/instances/{instance_id}/metadata/{name}", value,
                            {"If-Match": if_match} if if_match is not None else None)

    def delete_metadata(self, level: str, resource_id: str, name: str) -> None:
        self.transport.call("DELETE", f"/{level}/{resource_id}/metadata/{name}")

    def add_label(self, level: str, resource_id: str, label: str) -> None:
        self.transport.call("PUT", f"/{level}/{resource_id}/labels/{label}", "")

    # -- forwarding ------------------------------------------------------------------------
    def kind(self, destination: Destination) -> DestinationKind:
        return kind_of(self.destination_kinds, destination)

    def forward(self, destination: Destination, instance_ids: Sequence[str]) -> str:
        uri, body = self.kind(destination).store_request(destination.name, list(instance_ids))
        answer = post_json(self.transport, uri, body)
        return str(answer["ID"])

    def job(self, job_id: str) -> Job:
        return Job.from_json(get_json(self.transport, f"/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> None:
        self.transport.call("POST", f"/jobs/{job_id}/cancel", json.dumps({}))

    def probe(self, destination: Destination) -> bool:
        return self.kind(destination).probe(self.transport, destination.name)

    def holds(self, destination: Destination, instance_id: str) -> bool:
        return self.kind(destination).holds(self.transport, destination.name, lambda: self.instance_uids(instance_id))
