"""Imaging: from a DICOM, PNG or JPEG file to the small, display-ready image the model reads.

Shared by serving (the engine, the CLI) and training (``training/`` imports
:func:`.preprocess.to_model_input`), so that the model sees at inference what it saw in training.

- :mod:`.decode`       entry points (``decode_dicom``, ``decode_file``...) and the order of work
- :mod:`.geometry`     header checks before any pixel is decoded (Rows/Columns vs Pixel Data length)
- :mod:`.codec_headers`  the size a compressed frame (or a deflated dataset) declares, checked
  against Rows and Columns before a decoder allocates it
- :mod:`.codecs`       one module per codec family, and the choice between them
- :mod:`.voi`          unused bits, Modality LUT, VOI LUT or window (pydicom's), inversion
- :mod:`.attributes`   DICOM attribute names and tags in messages, from pydicom's data dictionary
- :mod:`.resample`     integer area reduction
- :mod:`.files`        reading files with a clear reason; telling DICOM, PNG and JPEG apart
- :mod:`.preprocess`   the one preprocessing function of training and serving
- :mod:`.xray_policy`  which SOP classes and modalities count as X-rays (the CLI and the
  adapter's ingest filter skip the same things for the same reason)

May import: errors, logs.
"""
