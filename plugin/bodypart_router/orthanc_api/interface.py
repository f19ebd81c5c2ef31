"""What the router asks of Orthanc, as one typed interface.

The core (forwarding, verify, claims, backfill) sees only :class:`Orthanc`; the adapter
provides it in process, the tests over HTTP or as ``tests/support/fake_orthanc.FakeOrthanc``.
Every method raises :class:`~bodypart_router.orthanc_api.errors.OrthancError` (or one of its
subclasses) when it does not succeed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import Destination

#: Orthanc job states of a job that has not finished yet.
UNFINISHED_JOB_STATES = ("Pending", "Running", "Paused", "Retry")
#: Job states a job can be cancelled from before it sent anything.
NOT_STARTED_JOB_STATES = ("Pending", "Paused", "Retry")


@dataclass(frozen=True)
class InstanceUids:
    """The DICOM UIDs a destination knows an instance by."""

    study: str
    series: str
    sop_instance: str


@dataclass(frozen=True)
class Job:
    """An Orthanc job as the forwarder needs it: ``state`` as Orthanc names it, and why it failed."""

    state: str
    error: str = ""

    @classmethod
    def from_json(cls, job: Mapping[str, Any]) -> "Job":
        state = str(job.get("State"))
        if state != "Failure":
            return cls(state)
        detail = job.get("ErrorDescription") or f"error code {job.get('ErrorCode')}"
        details = job.get("ErrorDetails")
        return cls(state, f"{detail}: {details}" if details else str(detail))

    @property
    def outcome(self) -> str:
        """``"success"``, ``"failure"`` or ``"running"``."""
        return {"Success": "success", "Failure": "failure"}.get(self.state, "running")


@dataclass(frozen=True)
class Metadata:
    """A metadata value and its revision (the ``ETag`` a conditional write must name)."""

    value: str
    revision: str


class Orthanc(Protocol):
    """The Orthanc operations the router uses (see the module docstring)."""

    # -- resources ----------------------------------------------------------------------
    def system(self) -> Mapping[str, Any]:
        """``GET /system``."""
        ...

    def exists(self, instance_id: str) -> bool:
        """Whether the instance is still stored (False once deleted)."""
        ...

    def instance_uids(self, instance_id: str) -> InstanceUids: ...

    def study_instances(self, study_id: str) -> list[str]:
        """Orthanc IDs of a study's instances."""
        ...

    def lookup(self, uid: str) -> list[Mapping[str, Any]]:
        """Resources with this DICOM UID (``/tools/lookup``): ``[{"Type": "Study", "ID": ...}]``."""
        ...

    def find(self, query: Mapping[str, Any]) -> list[Any]:
        """``/tools/find`` with Orthanc's query body."""
        ...

    def instances(self, since: int, limit: int) -> list[str]:
        """One page of every stored instance's ID."""
        ...

    # -- metadata and labels -------------------------------------------------------------
    def metadata(self, instance_id: str, name: str) -> Metadata | None:
        """The instance's metadata ``name``, or None when it has none."""
        ...

    def set_metadata(self, instance_id: str, name: str, value: str, *, if_match: str | None = None) -> None:
        """Write a metadata; with ``if_match`` only if its revision still is that (else
        :class:`~.errors.OrthancConflict`; a metadata that does not exist is created whatever it says)."""
        ...

    def delete_metadata(self, level: str, resource_id: str, name: str) -> None: ...

    def add_label(self, level: str, resource_id: str, label: str) -> None:
        """``level`` is ``"studies"``, ``"series"`` or ``"instances"`` (Orthanc 1.12 and later)."""
        ...

    # -- forwarding ------------------------------------------------------------------------
    def forward(self, destination: Destination, instance_ids: Sequence[str]) -> str:
        """Send instances to a destination as one asynchronous Orthanc job; returns its ID."""
        ...

    def job(self, job_id: str) -> Job:
        """The job's state (:class:`~.errors.OrthancNotFound` once Orthanc forgot it)."""
        ...

    def cancel_job(self, job_id: str) -> None: ...

    def probe(self, destination: Destination) -> bool:
        """Ask a destination that is down whether it answers again: True if it does, False if its
        kind cannot be probed without sending (DICOMweb); raises when it does not answer."""
        ...

    def holds(self, destination: Destination, instance_id: str) -> bool:
        """Whether the destination already holds the instance; raises
        :class:`~.errors.Unreachable` or :class:`~.errors.CannotAsk`."""
        ...
