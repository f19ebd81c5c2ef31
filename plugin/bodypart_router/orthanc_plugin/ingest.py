"""Ingest: notice every stored instance without ever making the store wait, and never lose one.

Why two paths:

* **Fast path.** ``OnStoredInstance`` is serialised across *all* uploads, so anything slow in
  it slows every modality sending to Orthanc. It therefore reads two tags from the dataset
  Orthanc already parsed (Modality, SOP Class UID), applies the X-ray policy and appends a
  tuple to a bounded in-memory queue with ``put_nowait``: no disk, no REST, no lock held
  for longer than a deque append. If the queue is full the item is dropped (one warning
  per overflow episode), which is safe because of the second path.
* **Durable path.** The :class:`Recorder` thread drains that queue into the SQLite
  :class:`~bodypart_router.forwarding.store.Store` in batches, and follows Orthanc's ``/changes`` log
  from a checkpoint kept in the same store. A ``NewInstance`` change whose instance is not
  in the store (stored just before a crash, or dropped by a full queue) is looked up by
  REST and recorded. The checkpoint only moves past changes that are recorded, so after a
  ``kill -9`` the next start resumes exactly where the durable record ends.

Where several Orthanc nodes share one index (and so one changes log), every node records every
new X-ray, and a worker claims each one before classifying it (:mod:`bodypart_router.forwarding.claims`),
so each is classified and forwarded by exactly one node. The recorder keeps the leases: it
renews this node's claims while work remains on them, and takes over the instances of a node
whose claims lapsed.

Deletions are not in the changes log: Orthanc reports them to plugins only through the
``OnChange`` callback (``DELETED``), which hands them to :meth:`Recorder.on_deleted`. The
recorder then forgets the instance (its pending work; delivered forwards stay in the ledger),
so that the same instance stored again is classified and routed like a new one, and is not
sent again to a destination that already received it.

On the very first start (no checkpoint yet) the checkpoint is set to the newest change:
what was in Orthanc before the router was installed is left to an explicit backfill. But a
state database that is new while the router has run on this Orthanc index before (it was
deleted, emptied, or set aside as corrupt: :attr:`Recorder.rebuild`) is rebuilt from the
*beginning* of the changes log: starting from the newest change would silently drop every
instance still owed a classification or a forward. Instances whose ``BodyPartState`` says
they were done (forwarded, skipped, failed) are recorded as such, not handled again.

The fast path reads the header without decoding long values (:func:`ingest_tags`), since every
other store waits while ``OnStoredInstance`` runs (figures in docs/security.md, "Ingest").
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from typing import Any

import orthanc  # type: ignore[import-not-found]

from ..forwarding.claims import CLAIM_METADATA, Claims, NoClaims, is_done
from ..config import RouterConfig
from ..orthanc_api import OrthancError
from ..errors import NotClassifiable
from ..ops.health import Health
from ..ops.ingest_gate import ArrivalRate
from ..forwarding.events import Dispatcher, InstanceReceived
from ..forwarding.store import Received, Store
from ..routing.ingest_headers import header_tags
from ..states import InstanceState, Kind
from ..service_thread import ServiceThread

LOGGER = logging.getLogger(__name__)

from .evidence import HeaderCache
from .host import OrthancRest
from .results import ResultWriter, stored_state

CHECKPOINT_KEY = "changes_checkpoint"
#: How long the recorder lets arrivals gather before it records them in one transaction.
RECORD_BATCH_SECONDS = 0.05
#: The same during a burst (arrivals at ``YieldToIngest.BusyArrivalsPerSecond`` or more), when
#: classification is held back anyway: fewer commits on the CPU the storing threads need.
BURST_RECORD_BATCH_SECONDS = 0.25
#: A single node reads the changes log this many times less often while the fast path misses nothing.
SAFETY_NET_FACTOR = 10

#: Longest value kept when the stored dataset is turned into JSON at ingest: longer values (LT,
#: UT, long sequences of text) are left out; every tag the router reads is shorter.
MAX_TAG_CHARS = 1024
#: Above this size the header is parsed from the file's bytes (:func:`header_tags`), which skips
#: long values unread, instead of Orthanc's JSON, which decodes them first. Below it, copying
#: the file's bytes would cost more than the JSON of an ordinary X-ray's header (figures in
#: docs/security.md, "Ingest").
JSON_MAX_INSTANCE_BYTES = 32 << 20
#: Kinds of ``BodyPartState`` that need nothing more from the router (``forwarded`` does not either).
DONE_KINDS = (Kind.SKIPPED, Kind.FAILED)
#: Detail of an instance recorded, while a lost state database is rebuilt, as done before.
RECOVERED_DETAIL = "state recovered from the instance's metadata"


def ingest_tags(dicom: Any) -> dict[str, Any]:
    """The instance being stored as ``{keyword: value}``, without building a JSON of its long values."""
    if dicom.GetInstanceSize() > JSON_MAX_INSTANCE_BYTES:
        return header_tags(dicom.GetInstanceData(), MAX_TAG_CHARS)
    try:
        text = dicom.GetInstanceAdvancedJson(orthanc.DicomToJsonFormat.HUMAN, orthanc.DicomToJsonFlags.NONE,
                                             MAX_TAG_CHARS)
    except AttributeError:  # an orthanc-python without it
        text = dicom.GetInstanceSimplifiedJson()
    tags = json.loads(text)
    return tags if isinstance(tags, dict) else {}


def _policy_state(instance_id: str, config: RouterConfig, modality: str | None, sop_class_uid: str | None) -> Received:
    """``queued`` for an X-ray to classify, or ``skipped:<reason>`` with the tag that decided it."""
    try:
        config.policy.check(modality, sop_class_uid)
    except NotClassifiable as exc:
        return Received(instance_id, exc.state, exc.detail)
    return Received(instance_id, InstanceState.QUEUED)


def policy_from_index(rest: OrthancRest, config: RouterConfig, instance_id: str) -> Received | None:
    """The X-ray policy for an instance already in Orthanc, from its index (no file read): for
    instances found in the changes log and for backfill. None if the instance was deleted since."""
    try:
        meta = rest.get_json(f"/instances/{instance_id}/metadata?expand")
        recorded = InstanceState.read(stored_state(meta))
        if recorded is InstanceState.FORWARDED or recorded is not None and recorded.kind in DONE_KINDS:
            return Received(instance_id, recorded, RECOVERED_DETAIL)
        series = rest.get_json(f"/instances/{instance_id}/series")
    except OrthancError as exc:
        if exc.status == 404:
            return None
        raise
    return _policy_state(instance_id, config, series.get("MainDicomTags", {}).get("Modality"),
                         meta.get("SopClassUid"))


class Recorder(ServiceThread):
    """Owns the in-memory hand-off queue and the thread that makes ingest durable."""

    def __init__(self, config: RouterConfig, store: Store, rest: OrthancRest, writer: ResultWriter,
                 events: Dispatcher, wake_workers: threading.Event) -> None:
        super().__init__("bodypart-recorder", interval=config.changes_poll_seconds)
        self.config = config
        self.store = store
        self.rest = rest
        self.writer = writer
        self.events = events
        self.wake_workers = wake_workers
        self.queue: queue.Queue[Received] = queue.Queue(maxsize=config.queue_size)
        self._overflowing = False
        self.claims: Claims | NoClaims = NoClaims()  # the app sets Claims when nodes share an index
        #: Counts what arrives, for the ingest gate (the app sets it).
        self.arrivals: ArrivalRate | None = None
        #: Headers of received X-rays, handed to the workers (evidence.py); None: read from the index.
        self.headers: HeaderCache | None = HeaderCache(config.queue_size)
        self._deleted: collections.deque[str] = collections.deque()
        self._last_lease_pass = 0.0
        self._last_poll = 0.0
        #: The changes log held something the fast path had missed (or a read failed): read it often.
        self._needs_catch_up = True
        #: Set by the app: the state database is new but the router ran on this index before,
        #: so the changes log is followed from its beginning, not from its newest change.
        self.rebuild = False
        #: Where the recorder reports what goes wrong (the status's ``Health``).
        self.health = Health()

    # -- the OnStoredInstance callback (runs on Orthanc's ingest path: keep it tiny) -------
    def on_stored_instance(self, dicom: Any, instance_id: str) -> None:
        if self.arrivals is not None:
            self.arrivals.note()
        try:
            tags = ingest_tags(dicom)
            item = _policy_state(instance_id, self.config, tags.get("Modality"), tags.get("SOPClassUID"))
            if item.state == InstanceState.QUEUED and self.headers is not None:  # the worker then reads no index
                self.headers.put(instance_id, tags, dicom.GetInstanceRemoteAet())
        except Exception as exc:  # never let a callback error reach Orthanc's store
            LOGGER.warning(f"instance {instance_id}: could not read Modality/SOPClassUID ({exc!r}); "
                           "queued for classification", exc_info=True)
            item = Received(instance_id, InstanceState.QUEUED)
        try:
            self.queue.put_nowait(item)
            self._overflowing = False
        except queue.Full:
            self._needs_catch_up = True  # read the changes log at the configured pace again
            if not self._overflowing:
                self._overflowing = True
                LOGGER.warning(f"ingest queue full ({self.config.queue_size}); new instances are picked up "
                               "from Orthanc's changes log instead (raise BodyPartRouter.QueueSize?)")
        self.wake_event.set()

    def on_deleted(self, instance_id: str) -> None:
        """Orthanc deleted an instance (``OnChange`` thread): forget it on the recorder's thread."""
        self._deleted.append(instance_id)
        self.wake_event.set()

    # -- thread ---------------------------------------------------------------------------
    def _poll_interval(self) -> float:
        """How long between two reads of the changes log. A single node whose ``OnStoredInstance``
        delivers everything reads it only as a safety net, ``SAFETY_NET_FACTOR`` times less often
        (each read is a transaction on the index); after an overflow, an error or a recovery, and
        always where nodes share the index (the others' instances come only from there), at the
        configured ``ChangesPollSeconds``."""
        if isinstance(self.claims, NoClaims) and not self._needs_catch_up:
            return self.config.changes_poll_seconds * SAFETY_NET_FACTOR
        return self.config.changes_poll_seconds

    def step(self) -> bool:
        if not self.queue.empty():
            # stores arriving: let a few more arrive, so that one commit records them all
            self.stop_event.wait(self._batch_seconds())
        self._drain()
        self._forget_deleted()
        self._leases()
        now = time.monotonic()
        if now - self._last_poll >= self._poll_interval():
            self._last_poll = now
            self._needs_catch_up = self.catch_up()
        self.health.clear("recorder")
        return False  # wait for the next store (wake) or poll

    def _batch_seconds(self) -> float:
        """Longer batches while a burst holds classification back (``YieldToIngest``), short ones otherwise."""
        busy = self.config.yield_busy_arrivals_per_s
        if (self.arrivals is not None and busy > 0 and self.config.yield_max_wait_seconds > 0
                and self.arrivals.per_second() >= busy):
            return BURST_RECORD_BATCH_SECONDS
        return RECORD_BATCH_SECONDS

    def failed(self, exc: Exception) -> None:
        self.health.problem("recorder", f"new instances are not being recorded: {exc}")
        self._needs_catch_up = True  # a read failed: read the changes log at the configured pace

    def after(self) -> None:
        self._drain()  # what is already queued at shutdown is still made durable (else: the changes log)

    def _drain(self) -> None:
        batch: list[Received] = []
        while len(batch) < 500:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if batch:
            self._record(batch)

    # -- cluster leases ---------------------------------------------------------------------
    def _leases(self) -> None:
        """Every third of a lease: renew this node's claims, look again at other nodes' (see claims.py)."""
        lease = self.config.claim_lease_seconds
        if not isinstance(self.claims, Claims) or time.monotonic() - self._last_lease_pass < lease / 3:
            return
        self._last_lease_pass = time.monotonic()
        self.renew_leases()
        taken = 0
        for instance_id, claim in self.store.elsewhere_due(time.time() - lease):
            if self.stop_event.is_set():
                break
            taken += self._look_again(instance_id, claim)
        if taken:
            LOGGER.warning(f"took over {taken} instance(s) whose owner stopped renewing its claim "
                           f"for {lease:g} s (a node that died?)")
            self.wake_workers.set()

    def renew_leases(self) -> None:
        """Renew the claims of the instances this node still has work on; give up those that
        another node took over meanwhile (this node was stopped or stalled past the lease)."""
        claims = self.claims
        if not isinstance(claims, Claims):
            return
        for instance_id in self.store.unfinished():
            if self.stop_event.is_set() or claims.renew(instance_id):
                continue
            seen = claims.read(instance_id)
            if seen is not None:
                self.store.lose(instance_id, seen.value)
                LOGGER.warning(f"instance {instance_id}: another node took it over while this one "
                               "did not renew its claim; left to that node")

    def _look_again(self, instance_id: str, claim: str) -> int:
        """An instance another node owned, a lease after its claim was seen: drop it if finished,
        watch it again if the claim was renewed, take it over if not. Returns 1 if taken over."""
        assert isinstance(self.claims, Claims)
        try:
            meta = self.rest.get_json(f"/instances/{instance_id}/metadata?expand")
        except OrthancError as exc:
            if exc.status == 404:
                self.store.forget(instance_id)
                return 0
            raise
        value = str(meta.get(CLAIM_METADATA, ""))
        state = InstanceState.read(stored_state(meta))
        if state is not None and state.is_final or is_done(value):
            self.store.forget(instance_id)  # finished by its owner: nothing to watch any more
            return 0
        seen = self.claims.read(instance_id)
        if seen is None and self.claims.claim(instance_id) or \
                seen is not None and seen.value == claim and self.claims.take_over(instance_id, seen):
            self.store.take_over(instance_id)
            LOGGER.info(f"instance {instance_id}: taken over from {claim.split(' ')[0]}, whose claim lapsed")
            return 1
        latest = self.claims.read(instance_id)
        self.store.observe(instance_id, latest.value if latest else value)
        return 0

    def _forget_reincarnated(self, items: list[Received]) -> None:
        """Several nodes: a deletion is reported only to the node that made it. An X-ray this node
        finished that arrives again without its claim was deleted through another node and
        stored again: forget the old record, so that it is handled like a new instance."""
        assert isinstance(self.claims, Claims)
        for item in items:
            if item.state != InstanceState.QUEUED:
                continue
            record = self.store.instance(item.instance_id)
            if record is None or record.state in (InstanceState.QUEUED, InstanceState.PROCESSING,
                                                  InstanceState.ELSEWHERE):
                continue
            if self.claims.read(item.instance_id) is None:
                self.store.forget(item.instance_id)
                LOGGER.info(f"instance {item.instance_id} was deleted and stored again; handled as new")

    def _forget_deleted(self) -> None:
        """Forget deleted instances. One stored again since its deletion (its ``DELETED`` change
        can be reported after the new ``OnStoredInstance``) is recorded afresh from the index."""
        while self._deleted:
            instance_id = self._deleted.popleft()
            if not self.store.known([instance_id]):
                continue
            self.store.forget(instance_id)
            try:
                fresh = policy_from_index(self.rest, self.config, instance_id)
            except OrthancError as exc:
                LOGGER.warning(f"instance {instance_id}: deleted, could not check whether it was stored again "
                               f"({exc}); the changes log will catch it up")
                continue
            if fresh is not None:
                self._record([fresh])
            LOGGER.info(f"instance {instance_id} was deleted; "
                        f"{'stored again since, handled as new' if fresh else 'forgotten'}")

    def _record(self, items: list[Received]) -> None:
        if isinstance(self.claims, Claims):
            self._forget_reincarnated(items)
        added = self.store.add_received(items)
        for item in added:
            if item.detail == RECOVERED_DETAIL:
                continue  # done before the state database was lost: nothing to write or count
            self.events.publish(InstanceReceived(item.instance_id, item.state, item.detail))
            if item.state != InstanceState.QUEUED:
                LOGGER.info(f"instance {item.instance_id}: {item.state} ({item.detail})")
        if any(item.state == InstanceState.QUEUED for item in added):
            self.wake_workers.set()

    # -- changes log ------------------------------------------------------------------------
    def catch_up(self) -> bool:
        """Record every NewInstance change after the checkpoint that the store does not know yet.
        Returns whether it found any (the fast path had missed them)."""
        checkpoint = self.store.get_setting(CHECKPOINT_KEY)
        if checkpoint is None:
            last = int(self.rest.get_json("/changes?last")["Last"])
            if self.rebuild:
                LOGGER.warning(f"the state database is new but the router has run on this Orthanc before: "
                               f"rebuilding its work list from the beginning of Orthanc's changes log "
                               f"({last} changes), so that nothing still owed is lost")
                self.health.problem("rebuild", f"rebuilding the work list from Orthanc's changes log "
                                               f"(0 of {last} changes read)")
                checkpoint = "0"
                self.store.set_setting(CHECKPOINT_KEY, checkpoint)
            else:
                self.store.set_setting(CHECKPOINT_KEY, str(last))
                LOGGER.info(f"following Orthanc's changes log from change {last}")
                return False
        since = int(checkpoint)
        recovered = False
        while not self.stop_event.is_set():
            answer = self.rest.get_json(f"/changes?since={since}&limit=500")
            changes = answer.get("Changes", [])
            new_ids = [c["ID"] for c in changes if c.get("ChangeType") == "NewInstance"]
            deleted = [c["ID"] for c in changes
                       if c.get("ChangeType") == "Deleted" and c.get("ResourceType") == "Instance"]
            self._drain()  # let fast-path items land first, so known() is accurate
            known = self.store.known(new_ids)
            missing = [i for i in new_ids if i not in known]
            if missing:
                looked_up = (policy_from_index(self.rest, self.config, i) for i in missing)
                found = [r for r in looked_up if r is not None]
                self._record(found)
                LOGGER.info(f"recovered {len(found)} instance(s) from Orthanc's changes log")
                recovered = True
            for instance_id in deleted:
                self.store.forget(instance_id)
            last = int(answer.get("Last", since))
            if last > since:
                self.store.set_setting(CHECKPOINT_KEY, str(last))
                since = last
            if self.rebuild:
                self.health.problem("rebuild", f"rebuilding the work list from Orthanc's changes log "
                                               f"(up to change {since})")
            if answer.get("Done", True):
                if self.rebuild:
                    self.rebuild = False
                    self.health.clear("rebuild")
                    LOGGER.warning(f"work list rebuilt from Orthanc's changes log (up to change {since})")
                return recovered
        return recovered
