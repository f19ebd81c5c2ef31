"""Operations: what the router shows operators, and how it stays out of Orthanc's way.

- :mod:`.metrics`       counters once, shown twice: Prometheus and the status page's read model
- :mod:`.ingest_gate`   hold classification back while Orthanc is busy storing
- :mod:`.health`        the router's health in one word and a reason (status, page, metric)
- :mod:`.request_body`  one reader for the bodies of the router's REST requests (size, nesting,
  same-origin checks, typed fields)

May import: routing, inference, imaging, config, errors, logs, states, service_thread.
"""
