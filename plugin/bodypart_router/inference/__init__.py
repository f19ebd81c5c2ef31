"""Inference: the model and the engine that runs it on batches of files.

- :mod:`.classes`     the five groups and the model's secondary output vocabularies
- :mod:`.classifier`  load the ONNX model once, check its labels, classify batches
- :mod:`.modelcard`   a model must match the SHA-256 of its card
- :mod:`.engine`      decode + classify a batch, in this process or in a child process
- :mod:`.pipeline`    the CLI's batch loop over files and folders
- :mod:`.resources`   the cores this process may use, glibc malloc controls

It knows nothing of Orthanc, routes or deliveries: its output is a prediction or a reason.

May import: imaging, errors, logs.
"""
