"""Durable forwarding: nothing lost across restarts, nothing sent twice.

- :mod:`.store`     the durable work list and deliveries (SQLite, WAL)
- :mod:`.delivery`  forwards as Orthanc jobs: tracking, retries, circuit breaker, dead letters
- :mod:`.claims`    several nodes on one index: one node per instance
- :mod:`.verify`    ask a destination whether it already holds an instance before resending
- :mod:`.backfill`  classify (and route) what Orthanc stored before the router

Orthanc is reached through the small REST interfaces these modules declare; the adapter
provides them.

May import: routing, inference, imaging, config, errors, logs, states.
"""
