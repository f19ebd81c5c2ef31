"""ingest_ratio: Orthanc's ingest throughput with the router divided by without it.

The router promises that ingest never waits: ``OnStoredInstance`` only enqueues, and the
classification happens in worker threads. On a 2-core machine those threads still compete
with Orthanc for the CPU, so this is measured, not assumed. For each case (instance size x
protocol) the two configurations alternate, round after round and in alternating order, each
trial on a freshly started Orthanc with empty storage; one warm-up trial of each configuration
(not counted) first brings Orthanc, its plugins and the model into the page cache, because the
very first trial of a run was measured at half speed whatever its configuration. Ingest time runs from the first store
to the last acknowledgement; with the router, the time it then needs to finish classifying the
backlog is reported too ("drain"), to show that it keeps up rather than hiding work for later.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import psutil

from . import corpus
from .servers import DEFAULT_SENDERS, make_payload, orthanc_config, running, store_all, wait_until_drained

#: (ingest template, instances) as the speed specification asks: 300 x 0.5 MB and 50 x 15 MB.
CASES: tuple[tuple[str, int], ...] = (("small", 300), ("large", 50))
PROTOCOLS = ("rest", "c-store")
VARIANTS = ("with_router", "without_router")


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _warm_up(data: corpus.Corpus, model: Path, work: Path, senders: int) -> None:
    payload = make_payload("warm-up", data.ingest["small"], 50, work / "payloads")
    items = [f.read_bytes() for f in payload.files]
    for variant in VARIANTS:
        with_router = variant == "with_router"
        with running(orthanc_config(model if with_router else None), f"warm-up-{variant}",
                     work / "orthanc" / variant, router=with_router) as server:
            store_all(server, items, "rest", senders)
            if with_router:
                wait_until_drained(server, len(items))


def measure(
    data: corpus.Corpus,
    model: Path,
    work: Path,
    *,
    cases: tuple[tuple[str, int], ...] = CASES,
    protocols: tuple[str, ...] = PROTOCOLS,
    rounds: int = 5,
    senders: int = DEFAULT_SENDERS,
    on_trial: Callable[[str, str, float], None] | None = None,
) -> dict:
    """``{case: {...}, "worst": lowest ratio}``; a case is e.g. ``small_rest``."""
    results: dict = {}
    _warm_up(data, model, work, senders)
    for size, count in cases:
        payload = make_payload(f"{size}-{count}", data.ingest[size], count, work / "payloads")
        megabytes = payload.total_bytes / 1e6
        for protocol in protocols:
            case = f"{size}_{protocol}"
            items = payload.files if protocol == "c-store" else [f.read_bytes() for f in payload.files]
            rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
            server_cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            client_cpu: list[float] = []
            drains: list[float] = []
            for r in range(rounds):
                for variant in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
                    with_router = variant == "with_router"
                    config = orthanc_config(model if with_router else None)
                    with running(config, f"ingest-{variant}", work / "orthanc" / variant, router=with_router) as server:
                        process = psutil.Process(server.pid)
                        cpu_before, client_before = _cpu_seconds(process), time.process_time()
                        seconds = store_all(server, items, protocol, senders)
                        server_cpu[variant].append((_cpu_seconds(process) - cpu_before) / count)
                        client_cpu.append((time.process_time() - client_before) / seconds)
                        stored = server.get_json("/statistics")["CountInstances"]
                        if stored != count:
                            raise RuntimeError(f"{case}: {stored} instances stored, expected {count}")
                        if with_router:
                            drains.append(wait_until_drained(server, count))
                    rates[variant].append(count / seconds)
                    if on_trial:
                        on_trial(case, variant, count / seconds)
            with_median = statistics.median(rates["with_router"])
            without_median = statistics.median(rates["without_router"])
            results[case] = {
                "instances": count,
                "megabytes": round(megabytes, 1),
                "senders": senders,
                "ratio": round(with_median / without_median, 3),
                "with_router_per_s": round(with_median, 1),
                "without_router_per_s": round(without_median, 1),
                "with_router_mb_per_s": round(with_median * megabytes / count, 1),
                "rounds": {v: [round(x, 1) for x in rates[v]] for v in VARIANTS},
                "drain_after_last_store_s": [round(x, 2) for x in drains],
                # Where the CPU went while storing: Orthanc's own threads (router included) per
                # instance, and the share of one core the senders in this process used.
                "orthanc_cpu_ms_per_instance": {v: round(1000 * statistics.median(server_cpu[v]), 2) for v in VARIANTS},
                "sender_cpu_cores": round(statistics.median(client_cpu), 2),
            }
    ratios = [v["ratio"] for v in results.values() if isinstance(v, dict)]
    results["worst"] = min(ratios) if ratios else None
    return results
