"""bodypart-router: classify X-rays by body part from their pixels and route them.

The package is layered, lowest first; each sub-package's docstring says what it holds and, on
its ``May import:`` line, which other parts of the package it may import
(``tests/test_architecture.py`` checks those lines, that there is no import cycle, and that
only :mod:`.orthanc_plugin` imports ``orthanc``):

- :mod:`.states`          the one state vocabulary: instance, delivery and circuit states, reasons
- :mod:`.retry`           the one retry policy (attempts, backoff, what is worth retrying)
- :mod:`.errors`          why an input cannot be classified (imports :mod:`.states` alone)
- :mod:`.logs`            where log records go: Orthanc's log, the terminal, a parent process (imports nothing)
- :mod:`.imaging`         DICOM/PNG/JPEG to a small display-ready image; the model's preprocessing
- :mod:`.inference`       the ONNX model, its classes and card, the batch engine (child process)
- :mod:`.routing`         the decision: header evidence, fusion, series vote, routing rules
- :mod:`.config`          the ``BodyPartRouter`` configuration section (schema, validation)
- :mod:`.forwarding`      durable work list, forwards as Orthanc jobs, claims, verify, backfill
- :mod:`.ops`             metrics and status read model, ingest gate, REST request hardening
- :mod:`.orthanc_plugin`  the Orthanc adapter, and the bootstrap script Orthanc loads
- :mod:`.cli`             the ``bodypart-router`` command line (no Orthanc)

Everything except :mod:`.orthanc_plugin` runs without Orthanc: from the CLI, tests and bench.
"""

__version__ = "0.1.0"
