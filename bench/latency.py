"""e2e_latency_s: from "store" to "arrived at the peer", at a sustained rate.

A real Orthanc peer plays the AI server; every class (and ``uncertain``) routes to it, so each
stored instance must arrive there. Instances are stored by REST on a fixed schedule (``rate``
per second, a small thread pool so that one slow store does not delay the next), and a watcher
polls the peer's changes log to timestamp each arrival. Orthanc instance IDs are hashes of the
DICOM UIDs, identical on both servers, which is how a store and its arrival are matched.

Latency = arrival seen at the peer - start of the store request. The watcher polls every
``POLL_SECONDS``, so a latency is overestimated by at most that much (half of it on average).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from support.orthanc import OrthancProcess

from .servers import Payload, router_and_peer

POLL_SECONDS = 0.05
#: Stores in flight at once; a late store still counts from when it really started.
SENDER_THREADS = 8


class _ArrivalWatcher:
    """Follows the peer's ``/changes`` and records when each instance ID first appears."""

    def __init__(self, peer: OrthancProcess) -> None:
        self.peer = peer
        self.arrived: dict[str, float] = {}
        self._stop = threading.Event()
        self._since = int(peer.get_json("/changes?last")["Last"])
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="bench-arrivals", daemon=True)

    def __enter__(self) -> "_ArrivalWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            answer = self._session.get(f"{self.peer.url}/changes?since={self._since}&limit=1000", timeout=10).json()
            now = time.monotonic()
            for change in answer.get("Changes", []):
                if change.get("ChangeType") == "NewInstance":
                    self.arrived.setdefault(change["ID"], now)
            self._since = int(answer.get("Last", self._since))
            if answer.get("Done", True):
                self._stop.wait(POLL_SECONDS)


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile; ``inf`` entries (never arrived) propagate."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    if math.isinf(ordered[hi]):
        return ordered[hi] if k > lo or math.isinf(ordered[lo]) else ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _finite(value: float) -> float | None:
    """Rounded seconds, or None (JSON null) for "never arrived"."""
    return None if math.isinf(value) else round(value, 3)


def measure(payload: Payload, model: Path, work: Path, *, rate: float = 10.0,
            settle_timeout: float = 60.0) -> dict:
    """Store ``payload`` at ``rate`` per second; latency percentiles of their arrival at the peer."""
    blobs = [f.read_bytes() for f in payload.files]
    with router_and_peer(model, work, "latency") as (router, peer):
        sent: dict[str, float] = {}
        slips: list[float] = []
        session_local = threading.local()

        def store(index: int, due: float) -> None:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            started = time.monotonic()
            slips.append(started - due)
            session = getattr(session_local, "s", None) or requests.Session()
            session_local.s = session
            r = session.post(router.url + "/instances", data=blobs[index],
                             headers={"Content-Type": "application/dicom"}, timeout=60)
            r.raise_for_status()
            sent[r.json()["ID"]] = started

        with _ArrivalWatcher(peer) as watcher:
            t0 = time.monotonic() + 0.5
            with ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="bench-store") as pool:
                futures = [pool.submit(store, i, t0 + i / rate) for i in range(len(blobs))]
                for f in futures:
                    f.result()
            deadline = time.monotonic() + settle_timeout
            while time.monotonic() < deadline and not set(sent) <= set(watcher.arrived):
                time.sleep(0.2)
        latencies = [watcher.arrived[i] - sent[i] for i in sent if i in watcher.arrived]
    missing = len(sent) - len(latencies)
    if not latencies:
        raise RuntimeError(f"none of the {len(sent)} stored instances arrived at the peer")
    # An instance that never arrived counts as infinitely late: it can only worsen a percentile.
    everything = latencies + [math.inf] * missing
    return {
        "instances": len(blobs),
        "payload": payload.name,
        "rate_per_s": rate,
        "duration_s": round(len(blobs) / rate, 1),
        "p50": _finite(_percentile(everything, 0.50)),
        "p95": _finite(_percentile(everything, 0.95)),
        "max": _finite(max(everything)),
        "mean_of_arrived": round(statistics.fmean(latencies), 3),
        "not_arrived": missing,
        "max_schedule_slip_s": round(max(slips), 3),
        "poll_resolution_s": POLL_SECONDS,
    }
