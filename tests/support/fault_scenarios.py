"""Fault scenarios against real processes: nothing lost, nothing duplicated.

Each scenario starts real Orthanc processes running the router (and, for scale-out, a
private PostgreSQL), injects one kind of fault, and counts at both ends:

* ``sent``: instances the sender got an acknowledgement for (HTTP 200 or C-STORE success);
* ``classified``: instances whose ``BodyPartState`` metadata says the model ran
  (``classified`` or ``forwarded``), read from the router's Orthanc;
* ``delivered``: distinct SOP Instance UIDs received by the destination, a
  :class:`RecordingSCP` that records every C-STORE, so a second copy of the same
  instance is counted as a duplicate and never hidden;
* ``lost``: instances that should have arrived (every class is routed to the SCP) but did
  not, plus accepted instances left without a final state;
* ``duplicates``: receptions beyond the first, summed over instances;
* ``orthanc_alive``: every router process still answers, and still accepts and routes a
  fresh X-ray at the end.

``run_scenario(name, sizes)`` returns a :class:`ScenarioResult`; ``scripts/faults.py`` prints
them as JSON lines and ``tests/integration/test_faults.py`` asserts on them at CI size.
Every process a scenario starts is stopped in a ``finally``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from bodypart_router.forwarding.claims import CLAIM_METADATA
from bodypart_router.inference.classes import CLASS_NAMES
from bodypart_router.inference.classifier import file_sha256
from pydicom.dataset import Dataset
from pynetdicom import AllStoragePresentationContexts
from support import tiny_model
from support.dicom_net import CountingSCP, c_store
from support.malformed import (
    CLASSIFIED,
    base_dataset,
    build_corpus,
    find_phi,
    phi_markers,
    to_bytes,
)
from support.orthanc import OrthancProcess, Runtime, get_runtime, router_config, wait_router_started
from support.postgres import POSTGRESQL_INDEX_PLUGIN, PostgresCluster
from support.postgres import unavailable as postgres_unavailable

log = logging.getLogger("faults")

#: The destination every class (and ``uncertain``) is routed to.
DESTINATION = "ai"
#: States after which the router will not touch an instance again by itself.
FINAL_PREFIXES = ("forwarded", "skipped:", "failed:")
#: States that mean the model ran on the instance.
CLASSIFIED_STATES = ("classified", "forwarded")
#: Index ranges of the PHI markers of the generated X-rays (the malformed corpus uses 0..999).
SCENARIO_INDEX_BASE = {"peer_down_60s": 1000, "orthanc_kill9_midstream": 2000, "orthanc_kill9_inflight": 3000,
                       "duplicate_stores": 4000, "two_nodes_postgres": 5000, "node_dies_for_good": 6000,
                       "alive_probe": 8000}


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is. :data:`FULL` for ``make faults``, :data:`CI` for the test suite."""

    peer_down_instances: int = 120
    peer_down_seconds: float = 60.0
    kill9_instances: int = 400          # sent in total
    kill9_queued_at_kill: int = 250     # kill once this many are acknowledged (none can be delivered yet)
    inflight_instances: int = 150       # forwarded to a slow destination while Orthanc is killed...
    inflight_kills: int = 3             # ...this many times, each time with C-STOREs on the wire
    inflight_scp_delay: float = 0.25    # seconds the destination takes to answer each C-STORE
    duplicate_instances: int = 100
    malformed_cases: int | None = None  # None: the whole corpus
    two_nodes_instances: int = 300
    dies_instances: int = 300           # node_dies_for_good: sent round-robin to 3 nodes...
    dies_at: int = 100                  # ...one of which is killed once this many are acknowledged
    dies_lease_seconds: float = 5.0     # ClaimLeaseSeconds of the nodes (short, to keep the run short)
    settle_seconds: float = 240.0       # how long to wait for the router to finish


FULL = Sizes()
CI = Sizes(peer_down_instances=30, peer_down_seconds=10.0, kill9_instances=240, kill9_queued_at_kill=200,
           inflight_instances=60, inflight_kills=3, duplicate_instances=30, malformed_cases=None,
           two_nodes_instances=60, dies_instances=90, dies_at=30, settle_seconds=120.0)


@dataclass
class ScenarioResult:
    """One line of ``make faults`` output. The first seven fields are the contract."""

    scenario: str
    sent: int = 0
    classified: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    orthanc_alive: bool = False
    phi_in_logs: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def json_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and self.orthanc_alive and self.phi_in_logs == 0


# --------------------------------------------------------------------------- the receiving end


class RecordingSCP(CountingSCP):
    """A counting storage SCP that accepts every storage SOP class in every transfer syntax.

    The router forwards whatever X-ray SOP class it classified (secondary capture
    multi-frame, DX for processing ...), so the destination must not be the reason a
    forward fails. ``received`` counts receptions per SOP Instance UID. It answers C-ECHO and
    C-FIND at IMAGE level (see :class:`CountingSCP`), so the router can ask it after a crash
    whether a forward in flight arrived.
    """

    storage_classes = tuple(context.abstract_syntax for context in AllStoragePresentationContexts)

    def __init__(self, aet: str = "AI_DEST", *, delay: float = 0.0) -> None:
        super().__init__(aet, delay=delay, answer_find=True)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.received)


# --------------------------------------------------------------------------- helpers


def xray(index: int) -> Dataset:
    """A small valid DX with the PHI markers of ``index`` (see :func:`support.malformed.phi_markers`)."""
    return base_dataset(index, rows=64, cols=64)


class Context:
    """What every scenario needs: a runtime, a model, a scratch directory, processes to clean up."""

    def __init__(self, runtime: Runtime, model: Path, workdir: Path, *, verbose_logs: bool = False) -> None:
        self.runtime = runtime
        self.model = model
        self.model_sha256 = file_sha256(model)
        self.workdir = workdir
        self.verbose_logs = verbose_logs
        self.processes: list[OrthancProcess] = []
        self.scps: list[RecordingSCP] = []
        self.clusters: list[PostgresCluster] = []
        self.all_logs: list[Path] = []

    def scp(self) -> RecordingSCP:
        scp = RecordingSCP("AI_DEST")
        self.scps.append(scp)
        return scp.start()

    def router(self, scp: RecordingSCP, *, name: str = "router", router: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None, start: bool = True) -> OrthancProcess:
        """An Orthanc running the router, every class and ``uncertain`` routed to ``scp``."""
        section = {
            "ModelSha256": self.model_sha256,  # accept this model on purpose (the tiny one has no card)
            "MinimumScore": 0.5,
            "UncertainRoutes": [DESTINATION],
            "Retry": {"MaxAttempts": 200, "BackoffSeconds": 0.5, "MaxBackoffSeconds": 2.0},
            "StateDirectory": str(self.workdir / f"{name}-state"),
        }
        section.update(router or {})
        config = router_config(
            self.runtime,
            model=self.model,
            routes={c: [DESTINATION] for c in CLASS_NAMES},
            modalities={DESTINATION: scp.modality},
            router=section,
            extra=extra,
        )
        # where nodes share an index, the router records each instance's owner in this metadata
        declared = dict(config.get("UserMetadata") or {})
        declared.setdefault(CLAIM_METADATA, max(declared.values(), default=1023) + 1)
        config["UserMetadata"] = declared
        proc = OrthancProcess(config, runtime=self.runtime, name=name, workdir=self.workdir / name,
                              args=["--verbose"] if self.verbose_logs else None)
        self.processes.append(proc)
        self.all_logs.append(proc.log_path)
        if start:
            proc.start()
            wait_router_started(proc, timeout=30)
        return proc

    def cleanup(self) -> None:
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except (OSError, RuntimeError, TimeoutError) as exc:  # keep cleaning up the others
                log.warning("could not stop %s: %r", proc.name, exc)
        for scp in self.scps:
            scp.stop()
        for n, cluster in enumerate(self.clusters):
            kept = self.workdir / f"postgres-{n}.log"  # the cluster's directory goes; its log is scanned too
            kept.write_text(cluster.log_text())
            self.all_logs.append(kept)
            cluster.cleanup()

    def scan_logs(self, birth_dates: frozenset[str]) -> tuple[list[str], int, int]:
        """Patient identifiers found in every Orthanc log of the scenario, the lines scanned, and
        the router threads' failed passes (service_thread.py logs "<thread>: step failed")."""
        hits: list[str] = []
        lines = failed_steps = 0
        for path in self.all_logs:
            if path.exists():
                text = path.read_text(errors="replace")
                lines += text.count("\n")
                failed_steps += text.count(": step failed")
                hits += find_phi(text, birth_dates)
        return hits, lines, failed_steps


def states(proc: OrthancProcess, instance_ids: list[str]) -> dict[str, str]:
    """``BodyPartState`` of each instance ("" when not set yet); for a skipped instance, which
    keeps no metadata unless ``MarkSkipped`` is set, the router's own record."""
    out = {}
    for iid in instance_ids:
        r = proc.request("GET", f"/instances/{iid}/metadata/BodyPartState", timeout=10)
        out[iid] = r.text if r.ok else ""
        if not out[iid]:  # the packed layout (BodyPartResult declared, as shipped)
            r = proc.request("GET", f"/instances/{iid}/metadata/BodyPartResult", timeout=10)
            out[iid] = str(r.json().get("State", "")) if r.ok else ""
        if not out[iid]:
            r = proc.request("GET", f"/bodypart-router/instances/{iid}", timeout=10)
            state = (r.json().get("State") or "") if r.ok else ""
            out[iid] = state if state.startswith("skipped:") else ""
    return out


def is_final(state: str) -> bool:
    return state.startswith(FINAL_PREFIXES)


def settle(procs: list[OrthancProcess], ids: list[str], scp: RecordingSCP, expect_delivered: set[str] | None,
           timeout: float) -> dict[str, str]:
    """Wait until every instance has a final state and the SCP has what it should; return the states.

    ``expect_delivered`` (SOP UIDs) may be None when only final states are awaited. Returns
    whatever was reached at the timeout (the caller counts what is missing as lost).
    """
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    pending = list(ids)
    next_report = time.monotonic() + 10
    while True:
        alive = [p for p in procs if p.running()]
        if alive:
            last.update(states(alive[0], pending))
            pending = [i for i in ids if not is_final(last.get(i, ""))]
        delivered_ok = expect_delivered is None or expect_delivered <= set(scp.snapshot())
        if (not pending and delivered_ok) or time.monotonic() > deadline or not alive:
            break
        if time.monotonic() > next_report:
            log.info("waiting: %d of %d without a final state, %d delivered", len(pending), len(ids),
                     len(scp.snapshot()))
            next_report = time.monotonic() + 10
        time.sleep(0.5)
    # a duplicate that is still on its way would arrive within a couple of seconds: wait for it
    time.sleep(2.0)
    return last


def alive_probe(procs: list[OrthancProcess], scp: RecordingSCP, index: int, timeout: float = 60.0) -> bool:
    """Every process answers, and a fresh X-ray stored now is routed to the destination."""
    for proc in procs:
        if not proc.running():
            return False
        try:
            proc.get_json("/system")
        except requests.RequestException:
            return False
    ds = xray(index)
    try:
        procs[0].upload(to_bytes(ds))
    except requests.RequestException:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scp.count(str(ds.SOPInstanceUID)) >= 1:
            return True
        time.sleep(0.3)
    return False


def count(result: ScenarioResult, ids_by_uid: dict[str, str], final: dict[str, str], scp: RecordingSCP,
          must_arrive: set[str]) -> None:
    """Fill classified / delivered / lost / duplicates from the router's metadata and the SCP.

    Duplicates count every second reception of any instance, also of one the sender never got
    an acknowledgement for (stored just before a crash, then sent again).
    """
    received = scp.snapshot()
    result.classified = sum(1 for iid in ids_by_uid.values() if final.get(iid, "") in CLASSIFIED_STATES)
    result.delivered = sum(1 for uid in ids_by_uid if received[uid] > 0)
    never_final = [iid for iid in ids_by_uid.values() if not is_final(final.get(iid, ""))]
    missing = [uid for uid in must_arrive if received[uid] == 0]
    result.lost = len(set(missing) | {uid for uid, iid in ids_by_uid.items() if iid in never_final})
    result.duplicates = sum(n - 1 for n in received.values() if n > 1)
    if missing:
        result.details["not_delivered"] = len(missing)
    if never_final:
        result.details["without_final_state"] = len(never_final)
        result.details["stuck_states"] = dict(Counter(final.get(i, "") or "(none)" for i in never_final))


def send_rest(proc: OrthancProcess, datasets: list[Dataset], *, workers: int = 4) -> dict[str, str]:
    """Upload by REST in parallel; returns {SOP Instance UID: Orthanc ID} of the acknowledged ones."""

    def one(ds: Dataset) -> tuple[str, str | None]:
        try:
            return str(ds.SOPInstanceUID), proc.upload(to_bytes(ds))
        except requests.RequestException:
            return str(ds.SOPInstanceUID), None

    with ThreadPoolExecutor(workers) as pool:
        return {uid: iid for uid, iid in pool.map(one, datasets) if iid}


# --------------------------------------------------------------------------- scenarios


def peer_down_60s(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """The destination is down while instances arrive, for ``peer_down_seconds``; then it comes back.

    Ingest must not slow down, forwards must be retried (not dead-lettered) and every
    instance must arrive once the peer is back.
    """
    result = ScenarioResult("peer_down_60s")
    scp = RecordingSCP("AI_DEST")  # created but not started: the peer is down
    ctx.scps.append(scp)
    router = ctx.router(scp)
    base = SCENARIO_INDEX_BASE["peer_down_60s"]
    datasets = [xray(base + i) for i in range(sizes.peer_down_instances)]
    t0 = time.monotonic()
    ids = send_rest(router, datasets)
    result.details["ingest_seconds"] = round(time.monotonic() - t0, 2)
    result.sent = len(ids)
    time.sleep(max(0.0, sizes.peer_down_seconds - (time.monotonic() - t0)))
    result.details["delivered_while_down"] = sum(scp.snapshot().values())
    scp.start()
    final = settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    count(result, ids, final, scp, must_arrive=set(ids))
    result.details["circuit_log_lines"] = _circuit_lines(router)
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 1)
    return result


def _circuit_lines(proc: OrthancProcess) -> dict[str, int]:
    """The router's log lines about the destination going down and coming back (one each, not a flood).

    The "reachable again" line is logged at info level, so it shows only with ``--verbose``.
    """
    lines = proc.log_text().splitlines()
    return {"down": sum(1 for line in lines if f"destination modality:{DESTINATION} is down" in line),
            "back": sum(1 for line in lines if f"destination modality:{DESTINATION} is reachable again" in line)}


def orthanc_kill9_midstream(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Orthanc is killed with SIGKILL while instances stream in and at least N wait to be forwarded.

    The destination is down until the kill, so acknowledged instances pile up in the
    router's queue. The sender keeps going: stores refused while Orthanc is down are sent
    again after the restart (as a modality would), so the instance in flight at the kill
    may be stored twice. Everything acknowledged must arrive exactly once.
    """
    result = ScenarioResult("orthanc_kill9_midstream")
    scp = RecordingSCP("AI_DEST")  # down until the kill
    ctx.scps.append(scp)
    router = ctx.router(scp)
    base = SCENARIO_INDEX_BASE["orthanc_kill9_midstream"]
    datasets = [xray(base + i) for i in range(sizes.kill9_instances)]
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop_sending = threading.Event()

    def sender(batch: list[Dataset]) -> list[Dataset]:
        """Send until refused (or told to stop); return what is left to send."""
        for n, ds in enumerate(batch):
            if stop_sending.is_set():
                return batch[n:]
            try:
                iid = router.upload(to_bytes(ds))
            except requests.RequestException:
                return batch[n:]
            with lock:
                acked[str(ds.SOPInstanceUID)] = iid
        return []

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(sender, datasets)
        deadline = time.monotonic() + sizes.settle_seconds
        while time.monotonic() < deadline and not future.done():
            with lock:
                if len(acked) >= sizes.kill9_queued_at_kill:
                    break
            time.sleep(0.02)
        with lock:
            snapshot = dict(acked)
        before_kill = states(router, list(snapshot.values()))  # what the router had done so far
        with lock:
            queued_at_kill = len(acked) - sum(1 for uid in acked if scp.count(uid))
        still_streaming = not future.done()
        router.kill()
        stop_sending.set()
        left = future.result()
    result.details["queued_at_kill"] = queued_at_kill
    result.details["states_just_before_kill"] = dict(Counter(v or "(none yet)" for v in before_kill.values()))
    result.details["killed_while_streaming"] = still_streaming
    scp.start()
    router.start()
    wait_router_started(router, timeout=30)
    stop_sending.clear()
    left = sender(left)
    result.details["unsent"] = len(left)
    result.sent = len(acked)
    final = settle([router], list(acked.values()), scp, set(acked), sizes.settle_seconds)
    count(result, acked, final, scp, must_arrive=set(acked))
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 2)
    return result


def orthanc_kill9_inflight(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Orthanc is killed with SIGKILL while forwards are on the wire, several times.

    The destination is up but slow: it holds each C-STORE ``inflight_scp_delay`` seconds
    after the data arrived and before it answers, so at every kill some instances have
    reached it without Orthanc knowing, and others are queued as jobs that never ran. After
    each restart the router must ask the destination (C-FIND) instead of resending blindly:
    everything arrives, and nothing twice.
    """
    result = ScenarioResult("orthanc_kill9_inflight")
    scp = RecordingSCP("AI_DEST", delay=sizes.inflight_scp_delay)
    ctx.scps.append(scp)
    scp.start()
    router = ctx.router(scp)
    base = SCENARIO_INDEX_BASE["orthanc_kill9_inflight"]
    ids = send_rest(router, [xray(base + i) for i in range(sizes.inflight_instances)])
    result.sent = len(ids)
    kills: list[int] = []  # C-STOREs the destination was handling at each kill
    for _ in range(sizes.inflight_kills):
        delivered_before = len(scp.snapshot())
        deadline = time.monotonic() + 60
        # a few forwards after the (re)start, then the moment a C-STORE is on the wire
        while time.monotonic() < deadline and len(scp.snapshot()) < min(len(ids), delivered_before + 3):
            time.sleep(0.02)
        while time.monotonic() < deadline and scp.in_progress == 0 and len(scp.snapshot()) < len(ids):
            time.sleep(0.005)
        if scp.in_progress == 0:
            break  # everything arrived already: nothing left in flight to kill
        kills.append(scp.in_progress)
        router.kill()
        time.sleep(sizes.inflight_scp_delay + 0.5)  # the interrupted C-STOREs end at the destination
        router.start()
        wait_router_started(router, timeout=30)
    result.details["kills"] = len(kills)
    result.details["cstores_on_the_wire_at_kills"] = kills
    final = settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    count(result, ids, final, scp, must_arrive=set(ids))
    lines = router.log_text().splitlines()
    result.details["verified_held"] = sum(1 for line in lines if "already holds it" in line)
    result.details["verified_missing"] = sum(1 for line in lines if "does not hold it" in line)
    result.details["c_finds"] = scp.finds
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 7)
    return result


def duplicate_stores(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Every instance is stored five times: REST twice at once, C-STORE, and REST again after a restart."""
    result = ScenarioResult("duplicate_stores")
    scp = ctx.scp()
    router = ctx.router(scp)
    base = SCENARIO_INDEX_BASE["duplicate_stores"]
    datasets = [xray(base + i) for i in range(sizes.duplicate_instances)]
    ids = send_rest(router, datasets + datasets)  # concurrent duplicates, while the first copies are queued
    statuses = c_store(datasets, router.dicom_port, called_aet=router.aet)
    result.details["c_store_failures"] = sum(1 for s in statuses if s != 0)
    first = settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    send_rest(router, datasets)  # late duplicates: already forwarded
    router.stop()
    router.start()
    wait_router_started(router, timeout=30)
    send_rest(router, datasets)  # after a restart: the durable store must still know them
    c_store(datasets[: len(datasets) // 2], router.dicom_port, called_aet=router.aet)
    result.sent = len(ids)
    result.details["stores_per_instance"] = 5
    final = settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    final = {**first, **final}
    count(result, ids, final, scp, must_arrive=set(ids))
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 3)
    return result


def malformed_corpus(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """The >= 500 malformed files of :mod:`support.malformed`, stored by REST.

    Orthanc itself refuses what it cannot parse (HTTP 400: counted in details); every
    instance it accepts must get a final state with its reason, every instance the router
    classified must arrive, and a valid X-ray stored afterwards must still be routed.
    """
    result = ScenarioResult("malformed_corpus")
    scp = ctx.scp()
    router = ctx.router(scp)
    corpus = build_corpus()
    crashers = [case for case in corpus if case.crashes_orthanc]
    corpus = [case for case in corpus if not case.crashes_orthanc]
    result.details["left_out_orthanc_crashers"] = len(crashers)
    if sizes.malformed_cases is not None:
        corpus = corpus[:: max(1, len(corpus) // sizes.malformed_cases)][: sizes.malformed_cases]
    accepted: dict[str, str] = {}   # SOP UID -> Orthanc ID
    case_of: dict[str, Any] = {}
    refused = 0

    def one(case: Any) -> tuple[Any, Any]:
        r = router.request("POST", "/instances", data=case.data, headers={"Content-Type": "application/dicom"})
        return case, r

    with ThreadPoolExecutor(4) as pool:
        for case, r in pool.map(one, corpus):
            if r.ok and isinstance(r.json(), dict) and r.json().get("ID"):
                body = r.json()
                uid = case.sop_instance_uid or f"orthanc:{body['ID']}"
                accepted[uid] = body["ID"]
                case_of[uid] = case
            else:
                refused += 1
    result.sent = len(corpus)
    result.details["accepted_by_orthanc"] = len(accepted)
    result.details["refused_by_orthanc"] = refused
    final = settle([router], list(accepted.values()), scp, None, sizes.settle_seconds)
    routable = {uid for uid, iid in accepted.items() if final.get(iid, "") in CLASSIFIED_STATES}
    # wait for the classified ones to arrive too
    deadline = time.monotonic() + sizes.settle_seconds
    while not routable <= set(scp.snapshot()) and time.monotonic() < deadline:
        time.sleep(0.5)
    final = {**final, **states(router, list(accepted.values()))}
    count(result, accepted, final, scp, must_arrive=routable)
    result.details["states"] = dict(Counter(final.get(iid, "") or "(none)" for iid in accepted.values()))
    unexpected = [f"{case_of[uid].name}: {final.get(iid)}" for uid, iid in accepted.items()
                  if _outcome(final.get(iid, "")) not in case_of[uid].expected]
    result.details["outcome_differs_from_core"] = len(unexpected)
    if unexpected:
        result.details["outcome_examples"] = unexpected[:10]
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 4)
    return result


def _outcome(state: str) -> str:
    """Map a BodyPartState to the core's outcome vocabulary (forwarded -> classified)."""
    return CLASSIFIED if state in CLASSIFIED_STATES else state


def two_nodes_postgres(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Two Orthanc processes share one PostgreSQL index (and storage), both running the router.

    Instances arrive at either node, and a third of them at both. Each must be classified and
    forwarded exactly once in total.
    """
    result = ScenarioResult("two_nodes_postgres")
    reason = postgres_unavailable()
    if reason:
        raise RuntimeError(f"two_nodes_postgres cannot run: {reason}")
    cluster = PostgresCluster()
    ctx.clusters.append(cluster)
    cluster.start()
    scp = ctx.scp()
    storage = ctx.workdir / "shared-storage"
    nodes = []
    for name in ("node-a", "node-b"):
        extra = {
            "Name": name,
            **cluster.orthanc_config(),
            "StorageDirectory": str(storage),
            "Plugins": [*ctx.runtime.plugins, POSTGRESQL_INDEX_PLUGIN],
            "SaveJobs": False,
        }
        nodes.append(ctx.router(scp, name=name, extra=extra))
    base = SCENARIO_INDEX_BASE["two_nodes_postgres"]
    datasets = [xray(base + i) for i in range(sizes.two_nodes_instances)]
    to_a = [ds for i, ds in enumerate(datasets) if i % 3 in (0, 2)]
    to_b = [ds for i, ds in enumerate(datasets) if i % 3 in (1, 2)]  # i % 3 == 2 goes to both
    # each node in turn takes its first instances while the other is paused, so that both surely
    # do work (else the node whose worker wakes first may claim the whole short stream through the
    # shared index)
    ids: dict = {}
    streams = {0: to_a, 1: to_b}
    for taker, other in ((1, 0), (0, 1)):
        first, streams[taker] = streams[taker][:4], streams[taker][4:]
        nodes[other].pause()
        try:
            taken = send_rest(nodes[taker], first, workers=1)
            ids.update(taken)
            deadline = time.monotonic() + sizes.settle_seconds
            while time.monotonic() < deadline and not any(
                    nodes[taker].request("GET", f"/instances/{iid}/metadata/{CLAIM_METADATA}").text.startswith(
                        nodes[taker].name) for iid in taken.values()):
                time.sleep(0.1)
        finally:
            nodes[other].resume()
    to_a, to_b = streams[0], streams[1]
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(send_rest, nodes[0], to_a, workers=2)
        fb = pool.submit(send_rest, nodes[1], to_b, workers=2)
        ids = {**ids, **fa.result(), **fb.result()}
    result.sent = len(ids)
    result.details["stored_on_both"] = sum(1 for i in range(len(datasets)) if i % 3 == 2)
    final = settle(nodes, list(ids.values()), scp, set(ids), sizes.settle_seconds)
    count(result, ids, final, scp, must_arrive=set(ids))
    result.details["nodes"] = len(nodes)
    owners = Counter(nodes[0].request("GET", f"/instances/{iid}/metadata/{CLAIM_METADATA}").text.rsplit("-", 1)[0]
                     or "(none)" for iid in ids.values())
    result.details["handled_by"] = dict(owners)  # claim owners, by node name
    result.orthanc_alive = alive_probe(nodes, scp, SCENARIO_INDEX_BASE["alive_probe"] + 5) and \
        alive_probe(nodes[::-1], scp, SCENARIO_INDEX_BASE["alive_probe"] + 6)
    return result


def _cluster(ctx: Context, scp: RecordingSCP, names: tuple[str, ...], router: dict[str, Any],
             user_metadata: dict[str, int] | None = None) -> list[OrthancProcess]:
    """Orthanc nodes with the router on one fresh PostgreSQL index and one storage directory."""
    reason = postgres_unavailable()
    if reason:
        raise RuntimeError(f"a PostgreSQL cluster cannot run: {reason}")
    cluster = PostgresCluster()
    ctx.clusters.append(cluster)
    cluster.start()
    storage = ctx.workdir / "shared-storage"
    nodes = []
    for name in names:
        extra = {
            "Name": name,
            **cluster.orthanc_config(),
            "StorageDirectory": str(storage),
            "Plugins": [*ctx.runtime.plugins, POSTGRESQL_INDEX_PLUGIN],
            "SaveJobs": False,
            **({"UserMetadata": user_metadata} if user_metadata else {}),
        }
        nodes.append(ctx.router(scp, name=name, extra=extra, router=router))
    return nodes


def node_dies_for_good(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Three Orthancs share one PostgreSQL index; one is killed with SIGKILL mid-stream and never
    comes back. Its claimed, unfinished instances must be taken over by the others once its
    lease (``ClaimLeaseSeconds``) has run out: every instance classified and forwarded, once.

    So that the victim surely dies owing work, the other two are paused (SIGSTOP) while the first
    ``dies_at`` instances go to it, and the destination is down until the kill: the victim claims
    them and holds their forwards. The others then resume, the stream goes on round-robin, and the
    victim is killed in the middle of it.
    """
    result = ScenarioResult("node_dies_for_good")
    scp = RecordingSCP("AI_DEST")  # down until the kill: the victim surely holds claimed, unfinished work
    ctx.scps.append(scp)
    # the shipped metadata layout: the result packed in BodyPartResult (the watchers read its state)
    nodes = _cluster(ctx, scp, ("node-a", "node-b", "node-c"), {"ClaimLeaseSeconds": sizes.dies_lease_seconds},
                     user_metadata={"BodyPartResult": 1031, "BodyPart": 1024, CLAIM_METADATA: 1030})
    victim, others = nodes[2], nodes[:2]
    base = SCENARIO_INDEX_BASE["node_dies_for_good"]
    datasets = [xray(base + i) for i in range(sizes.dies_instances)]
    acked: dict[str, str] = {}
    lock = threading.Lock()

    def victim_holds_forwards() -> int:
        deliveries = victim.get_json("/bodypart-router/status").get("Counts", {}).get("deliveries", {})
        return sum(deliveries.get(k, 0) for k in ("pending", "submitted", "verify"))

    for node in others:
        node.pause()
    try:
        for ds in datasets[:sizes.dies_at]:
            acked[str(ds.SOPInstanceUID)] = victim.upload(to_bytes(ds))
        held = 0
        deadline = time.monotonic() + sizes.settle_seconds
        while time.monotonic() < deadline and not (held := victim_holds_forwards()):
            time.sleep(0.1)
    finally:
        for node in others:
            node.resume()
    rest = datasets[sizes.dies_at:]

    def sender(node_index: int) -> None:
        """Round-robin over the nodes, skipping the dead one (as a load balancer would)."""
        for n, ds in enumerate(rest[node_index::3]):
            target = nodes[node_index]
            if not target.running():
                target = others[n % 2]
            try:
                iid = target.upload(to_bytes(ds))
            except requests.RequestException:
                try:
                    iid = others[n % 2].upload(to_bytes(ds))  # refused by the dying node: sent elsewhere
                except requests.RequestException:
                    continue
            with lock:
                acked[str(ds.SOPInstanceUID)] = iid

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(sender, i) for i in range(3)]
        deadline = time.monotonic() + sizes.settle_seconds
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            with lock:
                if len(acked) >= sizes.dies_at + min(10, len(rest) // 2):  # the stream is under way
                    break
            time.sleep(0.02)
        victim.kill()
        with lock:
            result.details["acknowledged_at_kill"] = len(acked)
        result.details["forwards_held_by_the_victim"] = held
        for f in futures:
            f.result()
    scp.start()
    result.sent = len(acked)
    final = settle(others, list(acked.values()), scp, set(acked), sizes.settle_seconds)
    count(result, acked, final, scp, must_arrive=set(acked))
    result.details["nodes"] = len(nodes)
    result.details["lease_seconds"] = sizes.dies_lease_seconds
    result.details["taken_over"] = sum(node.log_text().count("taken over from") for node in others)
    result.orthanc_alive = alive_probe(others, scp, SCENARIO_INDEX_BASE["alive_probe"] + 8)
    return result


SCENARIOS: dict[str, Callable[[Context, Sizes], ScenarioResult]] = {
    "peer_down_60s": peer_down_60s,
    "orthanc_kill9_midstream": orthanc_kill9_midstream,
    "orthanc_kill9_inflight": orthanc_kill9_inflight,
    "duplicate_stores": duplicate_stores,
    "malformed_corpus": malformed_corpus,
    "two_nodes_postgres": two_nodes_postgres,
    "node_dies_for_good": node_dies_for_good,
}

# The hardening scenarios (lost state database, full disk, killed classifier, flapping destination,
# decompression bombs, hostile requests) live in their own module, built on the helpers above.
from support.hardening_scenarios import SCENARIOS as _HARDENING_SCENARIOS  # noqa: E402

SCENARIOS.update(_HARDENING_SCENARIOS)


def _birth_dates() -> frozenset[str]:
    """Every PatientBirthDate any scenario writes (the corpus and the generated X-rays)."""
    indices = list(range(1000)) + [i for b in SCENARIO_INDEX_BASE.values() for i in range(b, b + 1000)]
    return frozenset(phi_markers(i)[2] for i in indices)


def run_scenario(name: str, sizes: Sizes = FULL, *, runtime: str | Runtime = "host", model: Path | None = None,
                 verbose_logs: bool = True, keep: bool = False) -> ScenarioResult:
    """Run one scenario in its own scratch directory and clean everything up afterwards.

    ``model`` defaults to the tiny test model (the scenarios test durability, not accuracy;
    every class is routed to the same destination). Orthanc runs with ``--verbose`` unless
    ``verbose_logs`` is False, so the patient-identifier check also reads info-level lines.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
    try:
        if model is None:
            model = workdir / "model.onnx"
            tiny_model.build(model)
        model = model.resolve()  # Orthanc resolves relative paths against its config's directory
        orthanc_runtime = get_runtime(runtime)
        reason = orthanc_runtime.unavailable()
        if reason:
            return ScenarioResult(name, details={"error": f"Orthanc runtime {orthanc_runtime.name} unavailable: {reason}"})
        ctx = Context(orthanc_runtime, model, workdir, verbose_logs=verbose_logs)
        t0 = time.monotonic()
        log.info("%s: starting in %s", name, workdir)
        try:
            result = SCENARIOS[name](ctx, sizes)
        except Exception as exc:
            log.exception("%s: scenario failed", name)
            result = ScenarioResult(name, details={"error": f"{type(exc).__name__}: {exc}"[:2000]})
        finally:
            ctx.cleanup()  # also on KeyboardInterrupt / SystemExit
        hits, lines, failed_steps = ctx.scan_logs(_birth_dates())
        result.phi_in_logs = len(hits)
        result.details["log_lines_scanned"] = lines
        result.details["failed_steps"] = failed_steps
        result.seconds = round(time.monotonic() - t0, 1)
        if keep:
            result.details["workdir"] = str(workdir)
        return result
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


