"""Durable forwarding: nothing lost across restarts, nothing sent twice.

- :mod:`.transitions`  pure functions: what an instance or a delivery becomes after each step
- :mod:`.store`     the durable work list (SQLite, WAL): it persists what the transitions decide;
  its parts :mod:`.store_schema`, :mod:`.store_deliveries`, :mod:`.store_reports`
- :mod:`.delivery`  forwards as Orthanc jobs: tracking, retries, dead letters
- :mod:`.circuit`   the per-destination circuit breaker
- :mod:`.claims`    several nodes on one index: one node per instance
- :mod:`.backfill`  classify (and route) what Orthanc stored before the router

Orthanc is reached through :class:`bodypart_router.orthanc_api.Orthanc` (in process in the
plugin, ``FakeOrthanc`` in the unit tests); asking a destination whether it already holds an
instance before resending is :mod:`bodypart_router.orthanc_api.destinations`.

May import: routing, inference, imaging, config, errors, logs, states, retry, orthanc_api, service_thread.
"""
