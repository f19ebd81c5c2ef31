"""One in-memory Orthanc implementing :class:`bodypart_router.orthanc_api.Orthanc`, for unit tests.

It keeps what the router asks about: stored instances (with their UIDs, metadata and
revisions), studies (date, UID), labels, forward jobs and what each destination received.
Knobs make it misbehave the way a real Orthanc and its destinations do: a destination in
``down`` fails its jobs, probes and questions; ``refuse`` refuses submissions; ``fail_after``
makes a job fail after sending that many instances; ``cannot_ask`` destinations answer no
question; ``jobs.clear()`` is Orthanc forgetting its jobs. The real thing is exercised by
``tests/integration``.

:func:`install` is something else: a recording mock of the ``orthanc`` module itself, so that
unit tests can import the adapter modules that still import it.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from bodypart_router.config import Destination
from bodypart_router.orthanc_api import (
    CannotAsk,
    InstanceUids,
    Job,
    Metadata,
    OrthancConflict,
    OrthancError,
    OrthancNotFound,
    OrthancRejected,
    Unreachable,
    destinations,
)

NETWORK_ERROR = "Error in the network protocol"


@dataclass
class FakeInstance:
    study: str = "study"
    uids: InstanceUids = InstanceUids("1", "1.2", "1.2.3")
    metadata: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (value, revision)


class FakeOrthanc:
    """See the module docstring. Instances not added explicitly exist, with default UIDs."""

    def __init__(self) -> None:
        self.stored: dict[str, FakeInstance] = {}
        self.deleted: set[str] = set()
        self.studies: dict[str, dict[str, Any]] = {}  # study id -> {"StudyDate", "StudyInstanceUID", "Instances"}
        self.labels: set[tuple[str, str, str]] = set()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submitted: list[tuple[str, list[str]]] = []  # (Orthanc's store route, instance IDs)
        self.arrived: list[str] = []
        self.held: dict[str, set[str]] = {}  # destination name -> instance IDs it holds
        self.down: set[str] = set()
        self.cannot_ask: set[str] = set()
        self.refuse = False
        self.fail_after: int | None = None
        self.probes: list[str] = []
        self.cancelled: list[str] = []
        self.polls = 0
        self.calls: list[str] = []
        self._kinds = destinations.kinds()

    # -- building the archive -----------------------------------------------------------
    def add_study(self, study_id: str, date: str = "", count: int = 1, uid: str | None = None) -> list[str]:
        ids = [f"{study_id}-i{k}" for k in range(count)]
        self.studies[study_id] = {"StudyDate": date, "StudyInstanceUID": uid or f"1.2.3.{study_id}", "Instances": ids}
        for k, instance_id in enumerate(ids):
            self.stored[instance_id] = FakeInstance(study_id, InstanceUids(uid or f"1.2.3.{study_id}", "1.2",
                                                                           f"1.2.3.{study_id}.{k}"))
        return ids

    def all_instances(self) -> list[str]:
        return [i for study in self.studies.values() for i in study["Instances"]]

    def _instance(self, instance_id: str) -> FakeInstance:
        if instance_id in self.deleted:
            raise OrthancNotFound(f"GET /instances/{instance_id}: (17, 'Unknown resource')")
        return self.stored.setdefault(instance_id, FakeInstance())

    # -- resources ----------------------------------------------------------------------
    def system(self) -> Mapping[str, Any]:
        return {"Version": "1.12.7", "Name": "fake"}

    def exists(self, instance_id: str) -> bool:
        return instance_id not in self.deleted

    def instance_uids(self, instance_id: str) -> InstanceUids:
        return self._instance(instance_id).uids

    def study_instances(self, study_id: str) -> list[str]:
        self.calls.append(f"GET /studies/{study_id}/instances")
        if study_id not in self.studies:
            raise OrthancNotFound(f"GET /studies/{study_id}/instances: (17, 'Unknown resource')")
        return list(self.studies[study_id]["Instances"])

    def lookup(self, uid: str) -> list[Mapping[str, Any]]:
        self.calls.append("POST /tools/lookup")
        return [{"Type": "Study", "ID": sid, "Path": f"/studies/{sid}"}
                for sid, study in self.studies.items() if study["StudyInstanceUID"] == uid]

    def find(self, query: Mapping[str, Any]) -> list[Any]:
        self.calls.append("POST /tools/find")
        if query.get("Level") != "Study" or query.get("Expand") is not False:
            raise OrthancRejected("only study-level, unexpanded finds are played", 400)
        low = str(query["Query"]["StudyDate"]).rstrip("-")
        hits = [sid for sid, study in self.studies.items() if study["StudyDate"] and study["StudyDate"] >= low]
        since = int(query.get("Since", 0))
        return hits[since: since + int(query.get("Limit", len(hits)))]

    def instances(self, since: int, limit: int) -> list[str]:
        self.calls.append(f"GET /instances?since={since}&limit={limit}")
        return self.all_instances()[since: since + limit]

    # -- metadata and labels: revisions checked as Orthanc does -------------------------
    def metadata(self, instance_id: str, name: str) -> Metadata | None:
        if instance_id in self.deleted:
            return None
        found = self._instance(instance_id).metadata.get(name)
        return None if found is None else Metadata(found[0], _etag(*found))

    def set_metadata(self, instance_id: str, name: str, value: str, *, if_match: str | None = None) -> None:
        instance = self._instance(instance_id)
        current = instance.metadata.get(name)
        if current is not None and if_match is not None and if_match != _etag(*current):
            raise OrthancConflict(f"PUT /instances/{instance_id}/metadata/{name}: revision mismatch")
        instance.metadata[name] = (value, (current[1] + 1) if current else 1)

    def delete_metadata(self, level: str, resource_id: str, name: str) -> None:
        self._instance(resource_id).metadata.pop(name, None)

    def add_label(self, level: str, resource_id: str, label: str) -> None:
        self.labels.add((level, resource_id, label))

    # -- forwarding ------------------------------------------------------------------------
    def forward(self, destination: Destination, instance_ids: Sequence[str]) -> str:
        uri, _ = self._kinds[destination.kind].store_request(destination.name, list(instance_ids))
        if self.refuse:
            raise OrthancRejected(f"POST {uri}: (9, 'Unknown modality')")
        job_id = f"job-{len(self.jobs)}"
        resources = list(instance_ids)
        self.submitted.append((uri, resources))
        failed = destination.name in self.down
        sent = [] if failed else resources if self.fail_after is None else resources[:self.fail_after]
        self.arrived += sent
        self.held.setdefault(destination.name, set()).update(sent)
        if self.fail_after is not None and len(resources) > self.fail_after:
            failed = True
        self.jobs[job_id] = {"State": "Failure" if failed else "Success", "ErrorCode": 9,
                             "ErrorDescription": NETWORK_ERROR if failed else ""}
        return job_id

    def job(self, job_id: str) -> Job:
        self.polls += 1
        if job_id not in self.jobs:
            raise OrthancNotFound(f"GET /jobs/{job_id}: (17, 'Unknown resource')")
        return Job.from_json(self.jobs[job_id])

    def cancel_job(self, job_id: str) -> None:
        self.cancelled.append(f"/jobs/{job_id}/cancel")
        if job_id in self.jobs:
            self.jobs[job_id]["State"] = "Failure"

    def probe(self, destination: Destination) -> bool:
        if destination.kind == "dicomweb":
            return False
        self.probes.append(destination.key)
        if destination.name in self.down:
            raise OrthancError(f"probe of {destination.key}: (9, '{NETWORK_ERROR}')", 500)
        return True

    def holds(self, destination: Destination, instance_id: str) -> bool:
        if destination.kind == "dicomweb" or destination.name in self.cannot_ask:
            raise CannotAsk(f"{destination.key} cannot be asked which instances it holds")
        self._instance(instance_id)
        if destination.name in self.down:
            raise Unreachable(f"{destination.key}: {NETWORK_ERROR}")
        return instance_id in self.held.get(destination.name, set())


def _etag(value: str, revision: int) -> str:
    return f'"{revision}-{hashlib.md5(value.encode()).hexdigest()}"'


def install() -> mock.MagicMock:
    """Put a mock ``orthanc`` module in ``sys.modules`` (once) and return it."""
    module = sys.modules.get("orthanc")
    if module is None:
        module = mock.MagicMock(name="orthanc")
        sys.modules["orthanc"] = module
    return module  # type: ignore[return-value]
