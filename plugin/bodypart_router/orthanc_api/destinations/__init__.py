"""Destination kinds, one module each, behind one interface: the only place that branches on the kind.

A rule's destination is a ``DicomModalities`` entry (:mod:`.modality`: C-STORE, asked by
C-FIND), an ``OrthancPeers`` entry (:mod:`.peer`: HTTP, asked by ``/tools/lookup``) or a
DICOMweb server (:mod:`.dicomweb`: STOW-RS, cannot be asked). Orthanc does the sending, so
TLS, credentials and transfer details stay in its configuration.

Verify before resend: after a crash (or when Orthanc forgot a job) the router cannot know
whether a forward that was in flight arrived, so before sending it again it asks the
destination. Three outcomes: it holds the instance (the delivery is recorded without
resending), it does not (resend), or it cannot be asked. ``Unreachable`` means the
destination is down (ask again later; resending would not get through either).
``CannotAsk`` means it is up but does not answer the question (a modality without a C-FIND
SCP, a peer refusing the lookup, a DICOMweb server): the router then resends, at least once
rather than lose it.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Callable
from typing import Any, Protocol

from ...config import Destination
from ..http import HttpAccess
from ..interface import InstanceUids
from ..transport import Transport
from .dicomweb import DicomWebServer
from .modality import Modality
from .peer import Peer, peers_from_config

#: Seconds allowed for one question to a destination (HTTP request, C-FIND or C-ECHO). Short,
#: because the forwarding thread waits for it and Orthanc's shutdown must not.
QUESTION_TIMEOUT_SECONDS = 3


class DestinationKind(Protocol):
    """How Orthanc sends to, probes, and asks one kind of destination."""

    def store_request(self, name: str, instance_ids: list[str]) -> tuple[str, dict[str, Any]]:
        """The Orthanc REST call that sends instances as one asynchronous job."""
        ...

    def probe(self, orthanc: Transport, name: str) -> bool:
        """True when the destination answers; False when it cannot be probed; raises when down."""
        ...

    def holds(self, orthanc: Transport, name: str, uids: Callable[[], InstanceUids]) -> bool:
        """Whether it holds the instance; raises ``Unreachable`` or ``CannotAsk``."""
        ...


def kinds(peers: Mapping[str, HttpAccess] | None = None,
          timeout: int = QUESTION_TIMEOUT_SECONDS) -> dict[str, DestinationKind]:
    """Each destination kind by its name in :class:`~bodypart_router.config.Destination`."""
    return {"modality": Modality(timeout), "peer": Peer(peers or {}, timeout), "dicomweb": DicomWebServer()}


def kind_of(table: Mapping[str, DestinationKind], destination: Destination) -> DestinationKind:
    try:
        return table[destination.kind]
    except KeyError:
        raise ValueError(f"unknown destination kind {destination.kind!r}") from None


__all__ = ["DestinationKind", "QUESTION_TIMEOUT_SECONDS", "kinds", "kind_of", "peers_from_config"]
