"""DICOM networking for tests: a C-STORE sender and a counting (optionally slow) storage SCP.

:class:`CountingSCP` plays an AI server reached by C-STORE. It counts what arrives per SOP
Instance UID, which is how the tests prove "forwarded once, never twice". With
``answer_find`` it also answers C-ECHO and C-FIND at IMAGE level from what it received, as
the router asks a destination after a crash whether a forward in flight arrived.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)

from .orthanc import free_port

STORAGE_CLASSES = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    CTImageStorage,
)


def c_store(
    datasets: Iterable[Dataset], port: int, *, called_aet: str = "ORTHANC", host: str = "127.0.0.1",
    calling_aet: str = "TEST_SCU",
) -> list[int]:
    """Send datasets over one association; returns the C-STORE status of each."""
    ae = AE(ae_title=calling_aet)
    for sop in STORAGE_CLASSES:
        ae.add_requested_context(sop, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        raise ConnectionError(f"C-STORE association to {called_aet}@{host}:{port} was not accepted")
    try:
        statuses = []
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if status else -1)
        return statuses
    finally:
        assoc.release()


class CountingSCP:
    """A storage SCP in a background thread. ``delay`` seconds are spent in every C-STORE, after the
    data has arrived and before it is counted and answered (so a sender killed meanwhile leaves an
    instance the SCP holds but the sender never saw acknowledged). ``answer_find`` adds C-ECHO
    and a C-FIND SCP at IMAGE level that matches on SOP Instance UID."""

    #: SOP classes accepted by C-STORE (in every transfer syntax).
    storage_classes: tuple[str, ...] = STORAGE_CLASSES

    def __init__(self, aet: str = "AI_SCP", *, delay: float = 0.0, answer_find: bool = False) -> None:
        self.aet = aet
        self.delay = delay
        self.answer_find = answer_find
        self.port = free_port()
        self.received: Counter[str] = Counter()
        self.held: dict[str, tuple[str, str]] = {}  # SOP Instance UID -> (study, series), with answer_find
        self.in_progress = 0  # C-STOREs being handled right now
        self.finds = 0
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.in_progress += 1
        try:
            uid = str(event.request.AffectedSOPInstanceUID)
            ids = None
            if self.answer_find:
                try:
                    ds = event.dataset
                    ids = (str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")))
                except Exception:  # an odd dataset is still stored and counted; C-FIND matches on the UID
                    ids = ("", "")
            if self.delay:
                time.sleep(self.delay)
            with self._lock:
                self.received[uid] += 1
                if ids:
                    self.held[uid] = ids
            return 0x0000
        finally:
            with self._lock:
                self.in_progress -= 1

    def _on_find(self, event: Any) -> Any:
        """C-FIND: IMAGE level only, one match per received SOP Instance UID the query names."""
        query = event.identifier
        with self._lock:
            self.finds += 1
            if str(query.get("QueryRetrieveLevel", "")) != "IMAGE":
                matches = []
            else:
                wanted = str(query.get("SOPInstanceUID", "") or "")
                matches = [(uid, ids) for uid, ids in self.held.items() if not wanted or uid == wanted]
        for uid, (study, series) in matches:
            answer = Dataset()
            answer.QueryRetrieveLevel = "IMAGE"
            answer.StudyInstanceUID, answer.SeriesInstanceUID, answer.SOPInstanceUID = study, series, uid
            yield 0xFF00, answer

    def start(self) -> Self:
        """Serve in the background: C-STORE of :attr:`storage_classes`, and C-ECHO/C-FIND if asked."""
        ae = AE(ae_title=self.aet)
        ae.maximum_associations = 20
        for sop in self.storage_classes:
            ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        if self.answer_find:
            ae.add_supported_context(Verification)
            ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
            ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
            handlers.append((evt.EVT_C_FIND, self._on_find))
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def count(self, sop_instance_uid: str) -> int:
        with self._lock:
            return self.received[sop_instance_uid]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def modality(self) -> tuple[str, str, int]:
        """The ``DicomModalities`` entry that reaches this SCP."""
        return (self.aet, "127.0.0.1", self.port)


def c_store_files(paths: Iterable[Path], port: int, *, called_aet: str = "ORTHANC",
                  host: str = "127.0.0.1", dimse_timeout: float = 10.0) -> list[tuple[str, int]]:
    """Send DICOM files as they are (any SOP class and transfer syntax); returns (SOP Instance UID, status)
    per file in order, status -1 for a file that could not be sent (no answer within
    ``dimse_timeout`` seconds, association refused...). Each file travels in its own encoding,
    over its own association."""
    from pydicom import dcmread
    from pydicom.uid import ImplicitVRLittleEndian

    loaded: list[tuple[str, Dataset | None]] = []
    groups: dict[tuple[str, str], list[int]] = {}
    for i, path in enumerate(paths):
        try:
            ds = dcmread(path, force=True)
            if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
                from pydicom.dataset import FileMetaDataset

                ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
            loaded.append((str(ds.SOPInstanceUID), ds))
            groups.setdefault(key, []).append(i)
        except Exception:
            loaded.append(("", None))
    statuses = [-1] * len(loaded)
    for (sop_class, syntax), indexes in groups.items():
        ae = AE(ae_title="DEMO_SCU")
        ae.dimse_timeout = dimse_timeout
        ae.add_requested_context(sop_class, [syntax])
        for i in indexes:
            assoc = ae.associate(host, port, ae_title=called_aet)  # one per file: an abort costs one file only
            if not assoc.is_established:
                continue
            try:
                status = assoc.send_c_store(loaded[i][1])
                statuses[i] = int(status.Status) if status else -1
            except Exception:
                statuses[i] = -1
            finally:
                if assoc.is_established:
                    assoc.release()
    return [(uid, st) for (uid, _), st in zip(loaded, statuses, strict=True)]
