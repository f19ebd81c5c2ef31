"""DICOM networking for tests: a C-STORE sender and a counting (optionally slow) storage SCP.

:class:`CountingSCP` plays an AI server reached by C-STORE. It counts what arrives per SOP
Instance UID, which is how the tests prove "forwarded once, never twice".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
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
    datasets: Iterable[Dataset], port: int, *, called_aet: str = "ORTHANC", host: str = "127.0.0.1"
) -> list[int]:
    """Send datasets over one association; returns the C-STORE status of each."""
    ae = AE(ae_title="TEST_SCU")
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
    """A storage SCP in a background thread. ``delay`` seconds are spent in every C-STORE."""

    def __init__(self, aet: str = "AI_SCP", *, delay: float = 0.0) -> None:
        self.aet = aet
        self.delay = delay
        self.port = free_port()
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        if self.delay:
            time.sleep(self.delay)
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.received[uid] += 1
        return 0x0000

    def start(self) -> CountingSCP:
        ae = AE(ae_title=self.aet)
        ae.maximum_associations = 20
        for sop in STORAGE_CLASSES:
            ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
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
