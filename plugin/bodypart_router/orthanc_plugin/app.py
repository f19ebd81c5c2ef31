"""The router inside Orthanc: its lifecycle, in the order Orthanc drives it.

1. **Load** (:meth:`RouterApp.load`, while Orthanc loads the script; REST is unavailable):
   read and validate the ``BodyPartRouter`` section, check and load the model, open the
   state store, register callbacks, REST routes, the Explorer script and extensions.
   An invalid configuration or model is logged, one line per problem, and the router
   stays **disabled** while Orthanc keeps running (an archive must keep accepting images);
   ``GET /bodypart-router/status`` then reports why.
2. **ORTHANC_STARTED** (:meth:`started`): detect the Orthanc version (labels need 1.12),
   put interrupted work back in the queue, start the recorder, workers and forwarder.
3. **ORTHANC_STOPPED** (:meth:`stopped`): signal every thread, join them within a few
   seconds (Orthanc's shutdown must stay under 10 s), close the store. Whatever is not
   finished stays in the store and resumes at the next start.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orthanc  # type: ignore[import-not-found]

from .. import __version__
from ..forwarding.claims import for_node as claims_for_node
from ..config import SECTION, SOURCE_METADATA, ConfigError, RouterConfig, parse
from ..errors import BodyPartRouterError
from ..inference.classifier import file_sha256
from ..inference.engine import (ChildEngine, Engine, EngineStartError, LocalEngine, ModelInfo, child_inference_threads,
                      python_for_child)
from ..ops.health import Health, HealthState, summarize
from ..ops.ingest_gate import ArrivalRate, HostCpu, IngestGate, default_busy_cores
from ..inference.resources import IdleTrim
from ..forwarding.events import Dispatcher, InstanceStateChanged
from ..forwarding.store import Delivery, Store
from ..forwarding.transitions import after_resubmit
from ..orthanc_api import OrthancClient, peers_from_config
from . import explorer, footprint, rest_api, thread_state
from .extensions import EXTENSIONS
from .forwarding import ForwardingThread
from .host import OrthancRest
from .routes import Unavailable
from .ingest import Recorder
from .results import ResultWriter, stored_values
from .series_decider import SeriesDecider
from .storage_files import StorageFiles
from .workers import ClassifyWorker

LOGGER = logging.getLogger(__name__)

#: Seconds allowed for all threads to finish at ORTHANC_STOPPED (Orthanc must stop in < 10 s,
#: and needs about 3 s of its own after this callback).
SHUTDOWN_BUDGET_SECONDS = 5.5
STATE_DB = "state.sqlite"
#: Orthanc global property (plugins use 1024 and above) set once the router has run on an index:
#: a new state database next to it is then a lost one, rebuilt from the changes log.
RAN_HERE_PROPERTY = 27351


def _router_threads() -> list[threading.Thread]:
    """The router's own threads (all named ``bodypart-...``): their CPU is not Orthanc's ingest."""
    return [t for t in threading.enumerate() if t.name.startswith("bodypart")]


class RouterApp:
    """Holds everything the router runs; extensions receive it in ``register(app)``."""

    def __init__(self, config_dir: Path) -> None:
        #: Directory of the Orthanc configuration: relative paths in the section are resolved from it.
        self.config_dir = config_dir
        #: The lifecycle's typed events (bodypart_router.forwarding.events): metadata, labels and metrics follow them.
        self.events = Dispatcher()
        self.rest = OrthancRest()
        self.config: RouterConfig | None = None
        self.orthanc_config: dict[str, Any] = {}
        self.error: str | None = None
        #: Every problem that disabled the router, one per entry (the status page lists them).
        self.errors: list[str] = []
        self.store: Store | None = None
        #: One engine per worker (child processes), or one shared in-process engine.
        self.engines: list[Engine] = []
        self.model: ModelInfo | None = None
        self.files: StorageFiles | None = None
        self.writer = ResultWriter(self.rest, "0")
        self.writer.follow(self.events)
        self.recorder: Recorder | None = None
        self.workers: list[ClassifyWorker] = []
        self.forwarder: ForwardingThread | None = None
        #: ``DecisionLevel: series`` only.
        self.series_decider: SeriesDecider | None = None
        self.ingest_gate: IngestGate | None = None
        self.stop_event = threading.Event()
        self.wake_workers = threading.Event()
        self.wake_forwarder = threading.Event()
        self.started_at: float | None = None
        #: Extra sections of ``GET /bodypart-router/status``: name -> () -> JSON-able value.
        self.status_sections: dict[str, Callable[[], Any]] = {}
        #: Called after the router's threads started / before they stop (extensions' own threads).
        self.on_started: list[Callable[[], None]] = []
        self.on_stopping: list[Callable[[], None]] = []
        #: Secret ``shutdown.lua`` passes to ``prepare-stop`` (see rest_api.py); set when routes register.
        self.stop_token = ""
        #: Called at ORTHANC_STARTED / ORTHANC_STOPPED even when the router is disabled (metrics
        #: must say so: ``bodypart_router_enabled 0``).
        self.on_orthanc_started: list[Callable[[], None]] = []
        self.on_orthanc_stopped: list[Callable[[], None]] = []
        #: What the router's parts report going wrong (``Health`` in the status).
        self.health = Health()
        self._model_file_seen: tuple[tuple[int, int, int], str | None] | None = None

    @property
    def enabled(self) -> bool:
        return self.config is not None and self.config.enabled and self.error is None

    # -- 1. load ------------------------------------------------------------------------
    def load(self) -> None:
        try:
            self._configure()
        except ConfigError as exc:
            self._disable("the configuration is invalid", exc.problems)
        except Exception as exc:  # model missing/tampered, state dir unwritable...
            if not isinstance(exc, BodyPartRouterError):  # not one of ours, whose message says it all
                LOGGER.exception(f"could not start: {exc!r}")
            self._disable("it could not start", [str(exc)])
        orthanc.RegisterOnChangeCallback(thread_state.keeping_thread_state(self._on_change))
        if self.enabled:
            assert self.recorder is not None
            orthanc.RegisterOnStoredInstanceCallback(thread_state.keeping_thread_state(self.recorder.on_stored_instance))
        rest_api.register(self)
        explorer.register()
        for name in EXTENSIONS:
            try:
                importlib.import_module(f".{name}", __package__).register(self)
            except Exception as exc:
                LOGGER.exception(f"extension {name} failed to load: {exc!r}")

    def _configure(self) -> None:
        self.orthanc_config = orthanc_config = json.loads(orthanc.GetConfiguration())
        self.config = config = parse(orthanc_config.get(SECTION), orthanc_config, base_dir=self.config_dir)
        if not config.enabled:
            LOGGER.warning(f"disabled by {SECTION}.Enabled = false; instances are neither classified nor forwarded")
            return
        from ..inference.modelcard import verify_model

        verified = verify_model(config.model_path, allowed_sha256=config.model_sha256)
        self.engines = self._start_engines(config, verified)
        self.model = self.engines[0].info
        self.files = StorageFiles(self.rest, orthanc_config, self.config_dir)
        self.writer.declare(orthanc_config.get("UserMetadata") or {})
        if not self.writer.packed and not self.writer.source_metadata:
            LOGGER.warning(f'declare "{SOURCE_METADATA}" in UserMetadata (e.g. "{SOURCE_METADATA}": 1040), or the '
                           'packed "BodyPartResult", to store what decided each class (pixels, pixels+header, '
                           "header, conflict)")
        busy = config.yield_busy_cores if config.yield_busy_cores is not None else default_busy_cores()
        arrivals = ArrivalRate()
        self.ingest_gate = IngestGate(busy, config.yield_max_wait_seconds, cpu=HostCpu(_router_threads),
                                      arrivals=arrivals.per_second, busy_arrivals_per_s=config.yield_busy_arrivals_per_s)
        self.writer.mark_skipped, self.writer.labels_wanted = config.mark_skipped, config.labels
        self.store = Store(config.state_directory / STATE_DB)
        self.writer.recall = functools.partial(stored_values, self.store)
        if self.store.set_aside is not None:
            LOGGER.error(f"the state database {self.store.path} was damaged ({self.store.corruption}); it was "
                         f"set aside as {self.store.set_aside.name} and a new one is rebuilt from Orthanc's "
                         "changes log")
        self.recorder = Recorder(config, self.store, self.rest, self.writer, self.events, self.wake_workers)
        self.recorder.claims, self.recorder.arrivals = claims_for_node(orthanc_config, self.store), arrivals
        self.recorder.health = self.health
        if not any(str(p).endswith("shutdown.lua") for p in orthanc_config.get("LuaScripts") or []):
            LOGGER.warning(f"LuaScripts does not list {Path(__file__).parent / 'bootstrap' / 'shutdown.lua'}: on Orthanc 1.10 "
                           "a shutdown during a forward may hang; add it (see orthanc-config/orthanc.json)")
        if orthanc_config.get("SaveJobs", True) and not config.shadow_mode:
            LOGGER.warning("SaveJobs is true: Orthanc reloads the forward jobs of a crashed run; the router cancels "
                           "those it finds, but set \"SaveJobs\": false (it tracks its own forwards)")
        routes = "; ".join(f"{r.name} -> {', '.join(map(str, r.destinations)) or 'nowhere'}" for r in config.rules)
        # One line at warning level, so that Orthanc's default log shows what is running.
        where = "child process" if self.in_child_process else "in Orthanc's process"
        LOGGER.warning(f"bodypart-router {__version__}: model {self.model.version} "
                    f"({self.model.provider}, {where}), routes: {routes or 'none'}"
                    f"{'; SHADOW MODE: nothing is forwarded' if config.shadow_mode else ''}")

    @property
    def in_child_process(self) -> bool:
        return any(isinstance(e, ChildEngine) for e in self.engines)

    def _start_engines(self, config: RouterConfig, verified_sha256: str) -> list[Engine]:
        """A child process per worker (see engine.py); where none can start, one engine in
        this process shared by the workers, with the in-process footprint measures."""
        why = "BodyPartRouter.ClassifyInChildProcess is false"
        if config.classify_in_child_process:
            python = python_for_child(config.python_environment)
            if python is None:
                why = (f"no python{sys.version_info.major}.{sys.version_info.minor} interpreter was found "
                       "(set BodyPartRouter.PythonEnvironment)")
            else:
                engines: list[Engine] = []
                threads = child_inference_threads(config.workers)
                try:
                    for _ in range(config.workers):
                        engines.append(ChildEngine(config.model_path, python=python, policy=config.policy,
                                                   intra_op_threads=threads,
                                                   expected_sha256=verified_sha256))
                    return engines
                except EngineStartError as exc:
                    for engine in engines:
                        engine.close()
                    why = str(exc)
            LOGGER.warning(f"classifying inside Orthanc's process: {why}")
        footprint.tune_in_process_malloc()
        engine = LocalEngine(config.model_path, policy=config.policy, intra_op_threads=footprint.INFERENCE_THREADS)
        if engine.info.sha256 != verified_sha256:
            raise RuntimeError(f"{config.model_path} changed while it was being loaded; start Orthanc again")
        return [engine]

    def _disable(self, why: str, problems: list[str]) -> None:
        self.error = "; ".join(problems)
        self.errors = list(problems)
        LOGGER.error(f"disabled because {why}; instances are stored but neither classified nor forwarded:")
        for problem in problems:
            LOGGER.error("  " + problem)

    # -- 2/3. lifecycle -------------------------------------------------------------------
    def _on_change(self, change_type: int, level: int, resource: str) -> None:
        try:
            if change_type == orthanc.ChangeType.ORTHANC_STARTED:
                self.started()
                for hook in self.on_orthanc_started:
                    self._safely(hook)
            elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
                for hook in self.on_orthanc_stopped:
                    self._safely(hook)
                self.stopped()
            elif change_type == orthanc.ChangeType.STABLE_SERIES and self.series_decider is not None:
                self.series_decider.stable(resource)
            elif (change_type == orthanc.ChangeType.DELETED and level == orthanc.ResourceType.INSTANCE
                  and self.recorder is not None and self.enabled):
                # Orthanc's /changes log keeps no deletions; only this callback reports them.
                self.recorder.on_deleted(resource)
                self.writer.forget_labels()
        except Exception as exc:
            LOGGER.exception(f"lifecycle: {exc!r}")

    def started(self) -> None:
        if not self.enabled:
            return
        assert self.config and self.store and self.recorder
        self.writer.set_version(str(self.rest.get_json("/system").get("Version", "0")))
        self._detect_lost_state()
        self.writer.resync(self.store)
        try:  # instances another node took over while this one was down are left to it
            self.recorder.renew_leases()
        except Exception as exc:
            LOGGER.warning(f"could not renew this node's claims at start-up ({exc!r}); renewed by the recorder",
                           exc_info=True)
        requeued = self.store.reset_in_flight()
        pending = self.store.queued_count()
        if requeued or pending:
            LOGGER.info(f"resuming {pending} queued instance(s) left by the previous run")
        self.recorder.start()
        assert self.files is not None
        self.workers = [
            ClassifyWorker(i, self.config, self.store, self.rest, self.writer, self.engines[i % len(self.engines)],
                           self.files, self.events, self.wake_workers, self.wake_forwarder, self.stop_event,
                           in_process=not self.in_child_process)
            for i in range(self.config.workers)
        ]
        if self.config.decision_level == "series":
            self.series_decider = SeriesDecider(self.store, self.rest, self.wake_workers)
            self.series_decider.recover()
        idle_trim = IdleTrim()
        for w in self.workers:
            w.series = self.series_decider
            w.yield_to_ingest = self.ingest_gate
            w.idle_trim = idle_trim
            w.claims = self.recorder.claims
            w.headers = self.recorder.headers
            w.health = self.health
            w.thread.start()
        if not self.config.shadow_mode:
            orthanc = OrthancClient(self.rest.transport, peers_from_config(self.orthanc_config))
            self.forwarder = ForwardingThread(self.config, self.store, orthanc, self.events, self.wake_forwarder,
                                              self.stop_event, orthanc if self.config.verify_before_resend else None)
            self.forwarder.idle_trim = idle_trim
            self.forwarder.health = self.health
            self.forwarder.after_step = self.writer.flush
            self.forwarder.thread.start()
        self.wake_workers.set()
        self.started_at = time.time()
        for hook in self.on_started:
            self._safely(hook)
        labels = "on" if self.writer.labels else "off" if self.writer.labels_supported else "off (Orthanc < 1.12)"
        LOGGER.info(f"started ({len(self.workers)} worker(s), Orthanc {self.writer.version}, labels {labels})")

    def _detect_lost_state(self) -> None:
        """A new state database where the router ran before (deleted, emptied, set aside): the
        recorder rebuilds the work list from the beginning of the changes log."""
        assert self.store and self.recorder
        try:
            ran_here = bool(orthanc.GetGlobalProperty(RAN_HERE_PROPERTY, ""))
            if not ran_here:
                orthanc.SetGlobalProperty(RAN_HERE_PROPERTY, "1")
        except Exception as exc:
            LOGGER.warning(f"cannot read or write Orthanc's global property {RAN_HERE_PROPERTY}: {exc!r}",
                           exc_info=True)
            ran_here = False
        if self.store.is_new and (ran_here or self.store.set_aside is not None):
            self.recorder.rebuild = True
            self.health.problem("rebuild", "rebuilding the work list from Orthanc's changes log")

    def prepare_stop(self) -> None:
        """Orthanc is about to stop (called through ``shutdown.lua``'s ``Finalize``, while every
        Orthanc service still works): stop the threads and let the forwarder see its running
        jobs to their end, so nothing in flight is forgotten or sent twice."""
        if self.enabled and self.started_at is not None and not self.stop_event.is_set():
            LOGGER.info("Orthanc is stopping (shutdown.lua): stopping the router's threads")
            self._stop_threads(drain=True)

    def stopped(self) -> None:
        """ORTHANC_STOPPED. If ``prepare_stop`` did not run, stop the threads without any REST call:
        with Orthanc 1.10's Python plugin a thread blocked in a jobs call while Orthanc signals
        this event never gets the interpreter back (see ``shutdown.lua``)."""
        if not self.enabled or self.started_at is None:
            return
        if not self.stop_event.is_set():
            self._stop_threads(drain=False)
        if self.store and not self._threads_alive():
            self.store.close()

    def _threads_alive(self) -> list[str]:
        threads = [w.thread for w in self.workers] + ([self.forwarder.thread] if self.forwarder else [])
        if self.recorder:
            threads.append(self.recorder.thread)
        return [t.name for t in threads if t.is_alive()]

    def _stop_threads(self, *, drain: bool) -> None:
        t0 = time.monotonic()
        deadline = t0 + SHUTDOWN_BUDGET_SECONDS
        for hook in self.on_stopping:
            self._safely(hook)
        if not drain:
            self.writer.suspend()  # results not written now are rewritten at the next start
        if self.forwarder and drain:
            self.forwarder.drain_until = time.time() + SHUTDOWN_BUDGET_SECONDS - 1.0
        self.stop_event.set()
        self.wake_workers.set()
        self.wake_forwarder.set()
        for engine in self.engines:
            if isinstance(engine, ChildEngine):
                engine.shutdown()  # the batch in hand still finishes; the child then exits
        assert self.recorder and self.store
        self.recorder.stop()
        threads = [w.thread for w in self.workers] + ([self.forwarder.thread] if self.forwarder else [])
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.recorder.thread.join(max(0.0, deadline - time.monotonic()))
        for engine in self.engines:
            engine.close()
        self.writer.close(self.store, flush=drain)
        alive = self._threads_alive()
        if alive:
            LOGGER.warning(f"stopping without waiting for {', '.join(alive)}; unfinished work resumes at next start")
        LOGGER.info(f"stopped in {time.monotonic() - t0:.2f} s")

    @staticmethod
    def _safely(hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception as exc:
            LOGGER.exception(f"hook {getattr(hook, '__qualname__', hook)} failed: {exc!r}")

    # -- helpers for routes and extensions ----------------------------------------------------
    def require_store(self) -> Store:
        if self.store is None:
            raise Unavailable(f"the router is disabled: {self.error or 'BodyPartRouter.Enabled is false'}")
        return self.store

    def resubmit_forwards(self, *, delivery_ids: list[int] | None = None, instance_ids: list[str] | None = None,
                          include_delivered: bool = False) -> list[Delivery]:
        """A person asks to send forwards again (see :meth:`Store.resubmit`): their instances show
        ``classified`` again until the new forwards finish, and the forwarder wakes up."""
        rows = self.require_store().resubmit(delivery_ids=delivery_ids, instance_ids=instance_ids,
                                             include_delivered=include_delivered)
        for d in rows:
            self.events.publish(InstanceStateChanged(d.instance_id, after_resubmit()))
        if rows:
            self.wake_forwarder.set()
        return rows

    def health_now(self) -> tuple[HealthState, str]:
        """``ok``, ``degraded:<why>``, ``stopped`` or ``disabled:<why>`` (see :mod:`bodypart_router.ops.health`)."""
        if not self.enabled:
            return summarize(disabled=self.error or "BodyPartRouter.Enabled is false", stopped=False, problems=[])
        problems = list(self.health.problems().values())
        stopping = self.stop_event.is_set()
        if self.started_at is not None and not stopping:
            dead = [name for name in self._threads_alive_or_dead()]
            if dead:
                problems.append(f"thread(s) {', '.join(dead)} stopped; restart Orthanc")
            if self.forwarder is not None:
                down = sorted(d for d, state in self.forwarder.forwarder.breaker.states().items() if state == "open")
                if down:
                    problems.append(f"destination(s) {', '.join(down)} unreachable, forwards to them wait")
        changed = self._model_file_changed()
        if changed:
            problems.append(changed)
        return summarize(disabled=None, stopped=stopping, problems=problems)

    def _threads_alive_or_dead(self) -> list[str]:
        """Names of the router's threads that should run and do not."""
        threads = [w.thread for w in self.workers] + ([self.forwarder.thread] if self.forwarder else [])
        if self.recorder:
            threads.append(self.recorder.thread)
        return [t.name for t in threads if t.ident is not None and not t.is_alive()]

    def _model_file_changed(self) -> str | None:
        """Why the file at ModelPath is no longer the model that runs (hashed again only when it
        was touched), or None."""
        if self.config is None or self.model is None:
            return None
        path = self.config.model_path
        try:
            st = path.stat()
        except OSError:
            return (f"the model file {path} is gone; the running model {self.model.version} keeps working "
                    "until the classifier restarts, then classification waits for the file")
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._model_file_seen is None or self._model_file_seen[0] != signature:
            try:
                digest: str | None = file_sha256(path)
            except OSError:
                digest = None
            self._model_file_seen = (signature, digest)
        digest = self._model_file_seen[1]
        if digest is not None and digest != self.model.sha256:
            return (f"the model file {path} changed since start-up (SHA-256 {digest[:12]}, running "
                    f"{self.model.sha256[:12]}); a restarted classifier refuses it: restore it or restart Orthanc")
        return None

    def status(self) -> dict[str, Any]:
        state, health = self.health_now()
        out: dict[str, Any] = {
            "Version": __version__,
            "Enabled": self.enabled,
            "Health": health,
            "Error": self.error,
            "Errors": list(self.errors),
            "ShadowMode": bool(self.config and self.config.shadow_mode),
            "OrthancVersion": self.writer.version,
        }
        try:
            out.update(self._status_of_work())
        except Exception as exc:  # a damaged or unreachable state database must not turn the status into a 500
            LOGGER.exception(f"status: {exc!r}")
            out["Health"] = summarize(disabled=None, stopped=False,
                                      problems=[*self.health.problems().values(), str(exc)])[1]
        for name, section in self.status_sections.items():
            try:
                out[name] = section()
            except Exception as exc:
                LOGGER.exception(f"status section {name}: {exc!r}")
                out[name] = {"Error": repr(exc)}
        return out

    def _status_of_work(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.enabled and self.store is not None:
            assert self.model is not None
            out["Model"] = {
                "Version": self.model.version,
                "Provider": self.model.provider,
                "Process": "child" if self.in_child_process else "orthanc",
            }
            gate = self.ingest_gate
            if gate is not None:
                out["YieldToIngest"] = {"BusyCores": gate.busy_cores, "MaxWaitSeconds": gate.max_wait_seconds,
                                        "OrthancCores": None if gate.last_load is None else round(gate.last_load, 2)}
            out["Counts"] = self.store.counts()
            out["QueueDepth"] = self.store.queued_count()
            out["Circuits"] = self.forwarder.forwarder.breaker.states() if self.forwarder else {}
            if self.config and self.config.shadow_mode:
                out["WouldSend"] = self.store.shadow_counts()
        return out
