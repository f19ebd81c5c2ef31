"""Optional adapter modules, loaded after the core of the router.

Each name is a module of this package with a ``register(app: RouterApp) -> None`` function,
called while the plugin loads. It may register REST routes (``rest_api.route``), subscribe
to ``app.events`` (a :class:`bodypart_router.forwarding.events.Dispatcher`), add a section to
``app.status_sections`` and start/stop its own threads
through ``app.on_started`` / ``app.on_stopping``. Adding a feature = one module + one line here.
"""

EXTENSIONS: list[str] = [
    "monitoring",    # metrics on /tools/metrics-prometheus, "Metrics" section of the status
    "header_audit",  # header vs pixels, BodyPartHeaderAudit metadata, mismatches per RemoteAET
    "backfill_api",  # /bodypart-router/backfill: classify what was stored before the router
    "status_ui",     # /bodypart-router/status.html and its resubmit action
    "routing_api",   # /bodypart-router/explain (dry run) and /bodypart-router/reroute
    "resource_view", # /bodypart-router/resource.html: one study's result, for Orthanc Explorer 2's buttons
]
