"""Real Orthanc processes for the benchmarks, and the senders that load them.

Every measurement starts its Orthanc in a fresh work directory (empty storage and router state),
so that one trial's leftovers (a backlog, a full index) never slow the next one down. The two
configurations compared are identical except for the router: the same Orthanc, the same GDCM
plugin, the same metadata declarations; "without" simply does not load the Python plugin.

Senders mimic modalities: several in parallel (``senders``), by REST (``POST /instances``) or by
C-STORE (one association per sender, the file streamed from disk as a modality would).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import requests

from bodypart_router.inference.classes import CLASS_NAMES
from bodypart_router.inference.classifier import file_sha256
from bodypart_router.config import load_orthanc_json
from support.orthanc import REPO, OrthancProcess, get_runtime, peer_config, router_config, wait_router_started

from . import corpus

#: Sender threads (parallel modalities) used unless a benchmark says otherwise.
DEFAULT_SENDERS = 4
#: The shipped Orthanc configuration; its performance-related settings are benchmarked as shipped.
SHIPPED_CONFIG = REPO / "orthanc-config" / "orthanc.json"
SHIPPED_KEYS = ("ConcurrentJobs", "JobsHistorySize", "MaximumStorageCacheSize", "UserMetadata")
#: The peer (an AI server) that :func:`router_and_peer` routes everything to.
PEER = "ai-peer"


def shipped_settings() -> dict[str, Any]:
    """The :data:`SHIPPED_KEYS` of the shipped configuration (those it sets)."""
    shipped = load_orthanc_json(SHIPPED_CONFIG)
    return {k: shipped[k] for k in SHIPPED_KEYS if k in shipped}


def orthanc_config(model: Path | None, *, peers: Mapping[str, OrthancProcess] | None = None,
                   routes: Mapping[str, list[str]] | None = None,
                   router: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Config for Orthanc with the router (``model`` given) or the same Orthanc without it."""
    runtime = get_runtime("host")
    model = model.resolve() if model else None  # Orthanc resolves relative paths from its config
    section = {"ModelSha256": file_sha256(model)} if model else {}
    config = router_config(runtime, model=model or Path("unused.onnx"), routes=routes or {},
                           peers=peers, router={**section, **(router or {})}, extra=shipped_settings())
    if model is None:  # everything the router brings, and nothing else, goes
        for key in ("BodyPartRouter", "PythonScript", "PythonVerbose", "LuaScripts"):
            config.pop(key, None)
        config["Plugins"] = [p for p in config["Plugins"] if "Python" not in Path(p).name]
    return config


def router_status(server: OrthancProcess) -> dict:
    return server.get_json("/bodypart-router/status")


def wait_until_drained(server: OrthancProcess, expected: int, *, forwarded: bool = False,
                       timeout: float = 600.0) -> float:
    """Seconds until the router has classified ``expected`` instances (and, if ``forwarded``,
    finished every delivery: none pending or submitted)."""
    start = time.monotonic()

    def drained() -> bool:
        status = router_status(server)
        counts = status.get("Counts", {})
        if status.get("QueueDepth", 1) != 0 or sum(counts.get("instances", {}).values()) < expected:
            return False
        deliveries = counts.get("deliveries", {})
        return not forwarded or deliveries.get("pending", 0) + deliveries.get("submitted", 0) == 0

    server.wait_for(drained, timeout=timeout, what=f"{expected} instances handled", interval=0.2)
    return time.monotonic() - start


@contextmanager
def running(config: dict[str, Any], name: str, workdir: Path, *, router: bool) -> Iterator[OrthancProcess]:
    """A started Orthanc in ``workdir`` (deleted afterwards); waits for the router if ``router``."""
    workdir = workdir.resolve()  # Orthanc runs with the work directory as its cwd
    server = OrthancProcess(config, name=name, workdir=workdir)
    try:
        server.start()
        if router:
            wait_router_started(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        os.sync()  # this trial's writes must not still be flushing during the next one


@contextmanager
def router_and_peer(model: Path, work: Path, name: str) -> Iterator[tuple[OrthancProcess, OrthancProcess]]:
    """A router and the plain Orthanc peer that every class (and ``uncertain``) is routed to,
    started in ``work/orthanc/<name>-router`` and ``-peer``; yields ``(router, peer)``."""
    with running(peer_config(PEER), f"{name}-peer", work / "orthanc" / f"{name}-peer", router=False) as peer:
        config = orthanc_config(model, peers={PEER: peer}, routes={c: [PEER] for c in CLASS_NAMES},
                                router={"UncertainRoutes": [PEER]})
        with running(config, f"{name}-router", work / "orthanc" / f"{name}-router", router=True) as router:
            yield router, peer


@dataclass(frozen=True)
class Payload:
    """Instances to store: files on disk (for C-STORE) and, loaded on demand, their bytes."""

    name: str
    files: list[Path]

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def make_payload(name: str, template: Path, count: int, out_dir: Path) -> Payload:
    """``count`` unique copies of ``template`` in ``out_dir/name`` (reused when already there)."""
    folder = out_dir / name
    files = [folder / f"{i:05d}.dcm" for i in range(count)]
    stamp = folder / ".complete"
    version = f"{corpus.CORPUS_VERSION}:{template.stat().st_mtime_ns}"
    if not (stamp.exists() and stamp.read_text() == version and all(f.exists() for f in files)):
        folder.mkdir(parents=True, exist_ok=True)
        for f, blob in zip(files, corpus.unique_copies(template, count, tag=name), strict=True):
            f.write_bytes(blob)
        stamp.write_text(version)
    return Payload(name, files)


def mixed_payload(name: str, templates: Sequence[Path], count: int, out_dir: Path) -> Payload:
    """``count`` unique instances, the i-th a copy of ``templates[i % len(templates)]``.

    Repeat a template in the list to weight it (nine small instances for one large one...).
    """
    n = len(templates)
    parts = [make_payload(f"{name}-{i}", t, len(range(i, count, n)), out_dir) for i, t in enumerate(templates)]
    return Payload(name, [parts[i % n].files[i // n] for i in range(count)])


# --------------------------------------------------------------------------- senders


def _rest_sender(server: OrthancProcess) -> Callable[[bytes | Path], None]:
    session = requests.Session()
    url = server.url + "/instances"

    def send(item: bytes | Path) -> None:
        data = item.read_bytes() if isinstance(item, Path) else item
        r = session.post(url, data=data, headers={"Content-Type": "application/dicom"}, timeout=120)
        r.raise_for_status()

    return send


class _CStoreSender:
    """One association; files are streamed from disk without being parsed (like a modality)."""

    def __init__(self, server: OrthancProcess) -> None:
        from pynetdicom import AE, _config
        from pynetdicom.sop_class import ComputedRadiographyImageStorage  # type: ignore[attr-defined]
        from pydicom.uid import ExplicitVRLittleEndian

        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = AE(ae_title="BENCH_SCU")
        ae.add_requested_context(ComputedRadiographyImageStorage, [ExplicitVRLittleEndian])
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        self.assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
        if not self.assoc.is_established:
            raise ConnectionError(f"C-STORE association to {server.aet} on port {server.dicom_port} was refused")

    def __call__(self, item: bytes | Path) -> None:
        if not isinstance(item, Path):
            raise TypeError("C-STORE sends files: give paths")
        status = self.assoc.send_c_store(item)
        if not status or int(status.Status) != 0:
            raise RuntimeError(f"C-STORE of {item.name} failed with status {getattr(status, 'Status', None)}")

    def close(self) -> None:
        self.assoc.release()


def store_all(server: OrthancProcess, items: Sequence[bytes | Path], protocol: str,
              senders: int = DEFAULT_SENDERS) -> float:
    """Store every item with ``senders`` parallel senders; returns the wall-clock seconds.

    The clock includes opening the associations (a modality does that too) and stops when the
    last store has been acknowledged.
    """
    if protocol not in ("rest", "c-store"):
        raise ValueError(f"protocol must be 'rest' or 'c-store', got {protocol!r}")
    work: queue.SimpleQueue[bytes | Path] = queue.SimpleQueue()
    for item in items:
        work.put(item)
    errors: list[BaseException] = []
    barrier = threading.Barrier(senders + 1)

    def sender() -> None:
        send: Callable[[bytes | Path], None] | None = None
        try:
            barrier.wait()
            send = _rest_sender(server) if protocol == "rest" else _CStoreSender(server)
            while True:
                try:
                    item = work.get_nowait()
                except queue.Empty:
                    return
                send(item)
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)
        finally:
            if isinstance(send, _CStoreSender):
                send.close()

    threads = [threading.Thread(target=sender, name=f"bench-sender-{i}") for i in range(senders)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} sender(s) failed; first: {errors[0]!r}") from errors[0]
    return elapsed
