"""A complete routing setup for tests: the router plus one receiver per kind of destination.

adult_chest -> "ai-chest", an Orthanc peer over HTTP; spine -> "ai-general", a DICOM SCP;
pediatric_chest -> "ai-slow", a DICOM SCP taking ``SLOW_SECONDS`` per C-STORE;
abdominal -> "ai-down", a peer URL where nothing listens; others and uncertain -> nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .dicom_net import CountingSCP
from .orthanc import OrthancProcess, Runtime, peer_config, router_config, wait_router_started

SLOW_SECONDS = 1.5


@dataclass
class RouterSetup:
    router: OrthancProcess
    chest: OrthancProcess       # Orthanc peer over HTTP: adult_chest
    general: CountingSCP        # DICOM SCP: spine
    slow: CountingSCP           # slow DICOM SCP: pediatric_chest


@contextmanager
def router_setup(runtime: Runtime, model: Path, sha256: str) -> Iterator[RouterSetup]:
    """Start everything (the router with ``--verbose`` logs); stop everything on exit, even on failure."""
    procs: list[OrthancProcess] = []
    scps: list[CountingSCP] = []
    try:
        chest = OrthancProcess(peer_config("ai-chest"), name="ai-chest")
        procs.append(chest)
        chest.start()
        general = CountingSCP("AI_GENERAL").start()
        scps.append(general)
        # it answers C-FIND: a batch of forwards to it outlasts a shutdown's drain, and is then
        # verified at the next start instead of sent again
        slow = CountingSCP("AI_SLOW", delay=SLOW_SECONDS, answer_find=True).start()
        scps.append(slow)
        config = router_config(
            runtime,
            model=model,
            routes={
                "adult_chest": ["ai-chest"],
                "spine": ["ai-general"],
                "pediatric_chest": ["ai-slow"],
                "abdominal": ["ai-down"],
            },
            peers={"ai-chest": chest, "ai-down": "http://127.0.0.1:9/"},
            modalities={"ai-general": general.modality, "ai-slow": slow.modality},
            router={
                "ModelSha256": sha256,
                "MinimumScore": 0.6,
                "Retry": {"MaxAttempts": 3, "BackoffSeconds": 0.2, "MaxBackoffSeconds": 0.5},
                "CircuitBreaker": {"FailureThreshold": 2},
            },
        )
        router = OrthancProcess(config, runtime=runtime, name="router", args=["--verbose"])
        procs.append(router)
        router.start()
        wait_router_started(router, timeout=20)
        yield RouterSetup(router, chest, general, slow)
    finally:
        for p in reversed(procs):
            p.cleanup()
        for s in scps:
            s.stop()
