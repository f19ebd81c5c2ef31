"""Compressed frames that declare another size than Rows x Columns, and deflate bombs, are refused
before any decoder allocates what they declare."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

from bodypart_router.imaging import codec_headers, codecs, decode
from bodypart_router.imaging.codecs import jpeg2000, pydicom_codecs
from bodypart_router.imaging.codec_headers import check_inflated_size, jpeg2000_size, jpeg_size
from bodypart_router.imaging.decode import decode_dicom
from bodypart_router.errors import NotClassifiable, Reason

from test_decode import gradient, make_cr, to_bytes


def _reason(data: bytes) -> NotClassifiable:
    with pytest.raises(NotClassifiable) as info:
        decode_dicom(data)
    return info.value


def _with_frame(path: Path, patch) -> bytes:
    ds = pydicom.dcmread(path)
    (frame,) = list(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([patch(bytearray(frame))])
    return to_bytes(ds)


def _no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decoder the router uses fails the test if it is reached."""
    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decoder was handed a frame whose header was not checked")

    monkeypatch.setattr(jpeg2000, "decode", reached)
    monkeypatch.setattr(codecs, "jpeg_ls_frame", reached)
    monkeypatch.setattr(codecs, "gdcm_frame", reached)
    monkeypatch.setattr(codecs, "baseline_frame", reached)
    monkeypatch.setattr(codecs, "pixel_array", reached)
    monkeypatch.setattr(pydicom_codecs, "pixel_array", reached)


@pytest.mark.parametrize("side", [16384, 65535])
def test_a_jpeg2000_siz_larger_than_rows_and_columns_is_refused(fixtures_dir: Path, side: int,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def bomb(frame: bytearray) -> bytes:
        start = frame.find(b"\xff\x4f\xff\x51")
        frame[start + 8:start + 16] = struct.pack(">II", side, side)  # Xsiz, Ysiz
        return bytes(frame)

    data = _with_frame(fixtures_dir / "chest_j2k.dcm", bomb)
    _no_decoder(monkeypatch)
    error = _reason(data)
    assert error.reason is Reason.INCONSISTENT_PIXELS and f"{side} x {side}" in error.detail


def test_a_jpeg_ls_frame_larger_than_rows_and_columns_is_refused(fixtures_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def bomb(frame: bytearray) -> bytes:
        sof = frame.find(b"\xff\xf7")
        frame[sof + 5:sof + 9] = struct.pack(">HH", 30000, 30000)
        return bytes(frame)

    data = _with_frame(fixtures_dir / "chest_jpegls.dcm", bomb)
    _no_decoder(monkeypatch)
    error = _reason(data)
    assert error.reason is Reason.INCONSISTENT_PIXELS and "30000 x 30000" in error.detail


def test_a_jpeg_frame_larger_than_rows_and_columns_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, jpeg = cv2.imencode(".jpg", (gradient(512, 512, 255)).astype(np.uint8))
    assert ok
    ds = make_cr(gradient(64, 64, 255).astype(np.uint8), BitsAllocated=8, BitsStored=8, HighBit=7)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg.tobytes()])
    _no_decoder(monkeypatch)
    error = _reason(to_bytes(ds))
    assert error.reason is Reason.INCONSISTENT_PIXELS and "512 x 512" in error.detail and "64 x 64" in error.detail


def test_frames_that_match_still_decode(fixtures_dir: Path) -> None:
    for name in ("chest_j2k.dcm", "chest_jpegls.dcm"):
        assert decode_dicom(fixtures_dir / name).pixels.size > 0
    ok, jpeg = cv2.imencode(".jpg", gradient(300, 200, 255).astype(np.uint8))
    assert jpeg_size(jpeg.tobytes()) == (200, 300)
    stream = (fixtures_dir / "chest_j2k.dcm").read_bytes()
    assert jpeg2000_size(stream) is not None


def test_a_deflate_bomb_is_refused_before_it_is_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make_cr(np.zeros((2048, 2048), np.uint16))  # 8 MB of zeros: deflates to a few KB
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    assert len(data) < 200_000
    monkeypatch.setattr(codec_headers, "MAX_INFLATED_BYTES", 4 * 1024 * 1024)
    monkeypatch.setattr(decode, "check_inflated_size",
                        lambda deflated: check_inflated_size(deflated, codec_headers.MAX_INFLATED_BYTES))

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("pydicom must not inflate it")

    monkeypatch.setattr(decode.pydicom, "dcmread", no_read)
    error = _reason(data)
    assert error.reason is Reason.IMAGE_TOO_LARGE and "inflates to more than 4 MiB" in error.detail


def test_inflating_is_checked_one_piece_at_a_time() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = bomb.compress(bytes(64 * 1024 * 1024)) + bomb.flush()
    with pytest.raises(NotClassifiable, match="inflates to more than 16 MiB"):
        check_inflated_size(deflated, 16 * 1024 * 1024)
    check_inflated_size(deflated, 64 * 1024 * 1024)  # exactly at the limit: fine
    check_inflated_size(b"not deflate at all")  # corrupt: left to the reader, which reports it
