"""The thin Orthanc adapter: the only part of bodypart-router that imports ``orthanc``.

Map of the package:

- :mod:`.app`         lifecycle (load -> ORTHANC_STARTED -> ORTHANC_STOPPED), status
- :mod:`.ingest`      OnStoredInstance fast path + durable recorder following /changes
- :mod:`.workers`     classification threads (fetch, decode, classify, write results)
- :mod:`.forwarding`  the thread driving the core's Forwarder (jobs, retries, breaker)
- :mod:`.results`     metadata and labels
- :mod:`.rest_api`    the plugin's REST routes; :mod:`.routes` the one helper every route goes through
- :mod:`.explorer`    Orthanc Explorer panel (explorer.js)
- :mod:`.extensions`  optional modules; they follow the typed events of :mod:`bodypart_router.forwarding.events`
- :mod:`.host`        the in-process implementation of :mod:`bodypart_router.orthanc_api`
- :mod:`.orthanc_log` the package's log records, forwarded to Orthanc's log
- ``bootstrap/``      the script Orthanc's ``PythonScript`` names (``orthanc_bootstrap.py``) and
  the ``LuaScripts`` shutdown hook; package data, not modules (``bodypart-router bootstrap-path``)

May import: imaging, inference, routing, config, forwarding, ops, errors, logs, states, retry, orthanc_api, service_thread.
"""

from __future__ import annotations

from pathlib import Path

import orthanc  # type: ignore[import-not-found]  # provided by Orthanc's Python plugin

from . import orthanc_log
from .app import RouterApp

_app: RouterApp | None = None


def install(config_dir: Path) -> RouterApp:
    """Create the router and register it with Orthanc. Called once by ``bootstrap/orthanc_bootstrap.py``,
    which already found ``config_dir``, the directory of the Orthanc configuration."""
    from .app import RouterApp

    global _app
    if _app is None:
        orthanc_log.install(orthanc)
        _app = RouterApp(config_dir)
        _app.load()
    return _app
