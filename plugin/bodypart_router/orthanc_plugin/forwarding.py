"""The forwarding thread: drives :class:`~bodypart_router.forwarding.delivery.Forwarder`, whose events Orthanc's
metadata follows."""

from __future__ import annotations

import logging
import threading
import time

from ..config import RouterConfig
from ..forwarding.delivery import Forwarder, Lookup
from ..forwarding.events import Dispatcher
from ..forwarding.store import Store
from ..ops.health import Health
from ..inference.resources import IdleTrim
from ..orthanc_api import Orthanc

LOGGER = logging.getLogger(__name__)


class ForwardingThread:
    def __init__(self, config: RouterConfig, store: Store, orthanc: Orthanc,
                 events: Dispatcher, wake: threading.Event, stop: threading.Event,
                 lookup: Lookup | None = None) -> None:
        self.wake = wake
        self.stop = stop
        self.forwarder = Forwarder(
            store=store,
            orthanc=orthanc,
            config=config,
            events=events,  # the writer and the metrics follow the forwards there
            lookup=lookup,
        )
        self.poll_seconds = config.job_poll_seconds
        #: Set by the app at shutdown: until when the thread may wait for running forwards.
        self.drain_until = 0.0
        #: Hands Orthanc's free heap back once the router is idle (see footprint.py).
        self.idle_trim: IdleTrim | None = None
        #: Where the thread reports what stops forwarding (the status's ``Health``).
        self.health = Health()
        self.thread = threading.Thread(target=self._run, name="bodypart-forwarder", daemon=True)

    def _run(self) -> None:
        try:
            self.forwarder.recover()  # forwards a crash left in flight: verified, not blindly resent
        except Exception as exc:
            LOGGER.exception(f"forwarder: recovery of in-flight forwards failed: {exc!r}")
        while not self.stop.is_set():
            try:
                changed = self.forwarder.step()
                self.health.clear("forwarder")
                if changed:
                    if self.idle_trim is not None:
                        self.idle_trim.busy()
                    continue
                if self.idle_trim is not None:
                    self.idle_trim.idle()
            except Exception as exc:
                LOGGER.exception(f"forwarder: {exc!r}")
                self.health.problem("forwarder", f"forwarding stopped by an error: {exc}")
                self.stop.wait(1.0)
            self.wake.wait(self.poll_seconds)
            self.wake.clear()
        if time.time() >= self.drain_until:
            return  # stopping without REST calls (see RouterApp.stopped)
        try:
            unresolved = self.forwarder.drain(self.drain_until)
        except Exception as exc:
            LOGGER.warning(f"forwarder: drain at shutdown failed: {exc!r}", exc_info=True)
            return
        if unresolved:
            LOGGER.warning(f"{unresolved} forward(s) still running at shutdown; "
                           "they are checked again at the next start")
