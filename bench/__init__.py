"""Benchmarks for the body-part router: ``make bench`` runs :mod:`bench.run`.

The modules split the work the way the results are reported:

- :mod:`bench.corpus`   deterministic benchmark inputs (realistic radiographs in each transfer syntax);
- :mod:`bench.model`    which ONNX model is measured (the shipped one, or a labelled stand-in);
- :mod:`bench.baseline` the naive classifier the router is compared with;
- :mod:`bench.classify` images/s for the router's pipeline versus the baseline;
- :mod:`bench.servers`  real Orthanc processes with and without the router, and the senders;
- :mod:`bench.ingest`   ingest throughput with the router divided by without it;
- :mod:`bench.latency`  store-to-peer latency at a sustained rate;
- :mod:`bench.memory`   Orthanc's resident memory with the router after 1,000 instances;
- :mod:`bench.scale`    what the router adds to a shared PostgreSQL index (scaling out);
- :mod:`bench.machine`  the facts about the machine that a figure is meaningless without;
- :mod:`bench.run`      runs everything, prints the table and writes ``bench/results.json``.
"""
