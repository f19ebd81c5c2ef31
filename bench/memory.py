"""rss_mb: resident memory of Orthanc running the router, after it has handled 1,000 instances.

The router lives inside Orthanc's process (the Python plugin), so Orthanc's RSS is the
router's footprint plus Orthanc's own. The instances are mostly 0.5 MB with one in ten a full
2500x3000 radiograph (uncompressed 15 MB or JPEG 2000), so that the large decodes a real
archive sees are part of the run. Every class routes to a real peer, as in production, so the
forwarding jobs are part of the footprint too. RSS is sampled while storing (peak), read the
moment the router has finished every instance (at_drain), and read again once it has been idle
for :data:`SETTLE_SECONDS` (after): the router hands freed memory back after a second without
work (engine.py, footprint.py), so ``after`` is what an idle router holds between bursts.
Child processes, if the router starts any, are counted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil

from . import corpus
from .servers import mixed_payload, router_and_peer, store_all, wait_until_drained

SAMPLE_SECONDS = 0.25
#: Idle time before ``after`` is read: the router's idle trims wait one second.
SETTLE_SECONDS = 3.0


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its descendants, in MB (10^6 bytes)."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6


def payload_templates(data: corpus.Corpus) -> list[Path]:
    """Eighteen small for one large uncompressed and one large JPEG 2000 (10 % large)."""
    return [data.ingest["small"]] * 18 + [data.ingest["large"], data.classify["jpeg2000"][0]]


def measure(data: corpus.Corpus, model: Path, work: Path, *, instances: int = 1000, senders: int = 2) -> dict:
    payload = mixed_payload(f"rss-{instances}", payload_templates(data), instances, work / "payloads")
    with router_and_peer(model, work, "rss") as (router, _peer):
        assert router.pid is not None
        before = tree_rss_mb(router.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                peak.append(tree_rss_mb(router.pid))

        sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
        sampler.start()
        try:
            store_all(router, payload.files, "rest", senders)
            wait_until_drained(router, instances, forwarded=True)
        finally:
            done.set()
            sampler.join()
        at_drain = tree_rss_mb(router.pid)
        time.sleep(SETTLE_SECONDS)
        after = tree_rss_mb(router.pid)
    return {
        "instances": instances,
        "payload_megabytes": round(payload.total_bytes / 1e6),
        "before": round(before, 1),
        "peak": round(max(peak), 1),
        "at_drain": round(at_drain, 1),
        "after": round(after, 1),
    }
