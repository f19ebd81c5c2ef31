"""The forwarding thread: drives :class:`~bodypart_router.forwarding.delivery.Forwarder`, whose events Orthanc's
metadata follows.

It reaches Orthanc only through the :class:`~bodypart_router.orthanc_api.Orthanc` it is given,
so it runs in the unit tests against ``FakeOrthanc``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..config import RouterConfig
from ..forwarding.delivery import Forwarder, Lookup
from ..forwarding.events import Dispatcher
from ..forwarding.store import Store
from ..inference.resources import IdleTrim
from ..ops.health import Health
from ..orthanc_api import Orthanc
from ..service_thread import ServiceThread

LOGGER = logging.getLogger(__name__)


class ForwardingThread(ServiceThread):
    def __init__(self, config: RouterConfig, store: Store, orthanc: Orthanc,
                 events: Dispatcher, wake: threading.Event, stop: threading.Event,
                 lookup: Lookup | None = None) -> None:
        super().__init__("bodypart-forwarder", interval=config.job_poll_seconds, stop=stop, wake=wake)
        self.forwarder = Forwarder(
            store=store,
            orthanc=orthanc,
            config=config,
            events=events,  # the writer and the metrics follow the forwards there
            lookup=lookup,
        )
        #: Set by the app at shutdown: until when the thread may wait for running forwards.
        self.drain_until = 0.0
        #: Hands Orthanc's free heap back once the router is idle (see footprint.py).
        self.idle_trim: IdleTrim | None = None
        #: Where the thread reports what stops forwarding (the status's ``Health``).
        self.health = Health()
        #: Called after each step (the app sets it: packed results whose wait for their forwards is over).
        self.after_step: Callable[[], object] | None = None

    def before(self) -> None:
        self.forwarder.recover()  # forwards a crash left in flight: verified, not blindly resent

    def step(self) -> bool:
        busy = bool(self.forwarder.step())
        if self.after_step is not None:
            self.after_step()
        self.health.clear("forwarder")
        if self.idle_trim is not None:
            self.idle_trim.busy() if busy else self.idle_trim.idle()
        return busy

    def failed(self, exc: Exception) -> None:
        self.health.problem("forwarder", f"forwarding stopped by an error: {exc}")

    def after(self) -> None:
        if time.time() >= self.drain_until:
            return  # stopping without REST calls (see RouterApp.stopped)
        unresolved = self.forwarder.drain(self.drain_until)
        if unresolved:
            LOGGER.warning("%d forward(s) still running at shutdown; they are checked again at the next start",
                           unresolved)
