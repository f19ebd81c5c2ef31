"""Inference: the model and the engine that runs it on batches of files.

- :mod:`.classes`     the five groups and the model's secondary output vocabularies
- :mod:`.classifier`  load the ONNX model once, check its labels, classify batches
- :mod:`.second_look` one more image where polarity or rotation is unsure, and the two rules that
  read it: :mod:`.polarity` (film against its negative), :mod:`.rotation` (film and a turned copy)
- :mod:`.modelcard`   a model must match the SHA-256 of its card
- :mod:`.batch`       the one batch path: decode, classify, every failure a state (CLI and engines)
- :mod:`.engine`      a batch of Orthanc's files through it, in this process or in a child process
- :mod:`.pipeline`    files and folders through it for the CLI (decoding pool, decoders' messages)
- :mod:`.resources`   the cores this process may use, glibc malloc controls

It knows nothing of Orthanc, routes or deliveries: its output is a prediction or a reason.

May import: imaging, errors, logs, states.
"""
