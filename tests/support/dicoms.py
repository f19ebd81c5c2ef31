"""Small synthetic DICOM instances for the plugin tests (generated, nothing committed).

``xray(gray=...)`` makes a flat CR image whose class the tiny test model controls
(see :mod:`support.tiny_model`); ``ct()`` and ``sr()`` are the non-X-ray cases.
Patient identifiers are fake but present, so tests can check they never reach the logs.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"

#: Fake identifiers written into every generated instance; they must never appear in a log.
PATIENT_NAME = "Testpatient^Secretname"
PATIENT_ID = "PID-SECRET-4711"
BIRTH_DATE = "19230405"


def _base(sop_class: str, modality: str, study_uid: str | None, series_uid: str | None) -> Dataset:
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyDate = "20240101"
    ds.InstanceNumber = 1
    return ds


def _pixels(ds: Dataset, gray: int, size: int, spot: bool = False) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    # Flat at gray*16 on a 12-bit scale; the window maps it back to `gray` on 8 bits.
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    pixels = np.full((size, size), gray * 16, dtype=np.uint16)
    if spot:  # a 2x2 bright spot, under 0.5 % of the image: the tiny model calls the film lateral
        pixels[size // 2:size // 2 + 2, size // 2:size // 2 + 2] = min(255, gray + 110) * 16
    ds.PixelData = pixels.tobytes()


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def xray(gray: int, *, size: int = 64, modality: str = "CR", study_uid: str | None = None,
         series_uid: str | None = None, lateral_spot: bool = False) -> Dataset:
    ds = _base(CR_STORAGE, modality, study_uid, series_uid)
    _pixels(ds, gray, size, spot=lateral_spot)
    return ds


def ct(size: int = 32) -> Dataset:
    ds = _base(CT_STORAGE, "CT", None, None)
    _pixels(ds, 100, size)
    return ds


def sr() -> Dataset:
    ds = _base(BASIC_TEXT_SR, "SR", None, None)
    ds.ValueType = "CONTAINER"
    return ds
