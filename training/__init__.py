"""Reproducible training of the body-part model shipped in ``models/``.

Entry point: ``python -m training.train --data <xray-bodypart> --out models/`` (see train.py).
Modules: data (manifest, group split), augment (source-shortcut removal), model (EfficientNet-Lite0),
features (frozen-trunk cache), fit (trained top), openset (others calibration), metrics, export,
evaluate (shortcut, DICOM, latency checks), card (MODEL_CARD.md).
"""
