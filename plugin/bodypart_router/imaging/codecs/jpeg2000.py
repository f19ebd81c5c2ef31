"""JPEG 2000 (and HTJ2K) at a reduced resolution through OpenJPEG.

A JPEG 2000 code-stream is a wavelet pyramid: asking OpenJPEG for resolution
level ``n`` skips the code-blocks of the ``n`` finest levels and returns the
image at ``1 / 2**n`` of its size. For a 2500x2048 radiograph, level 2 costs a
small fraction of a full decode, and the model only needs 224 pixels anyway.

pylibjpeg-openjpeg (MIT, bundling OpenJPEG, BSD-2-Clause) does not expose the
resolution factor in its Python API, so this module calls the OpenJPEG C API of
the library that wheel ships (falling back to a system ``libopenjp2``) through
:mod:`ctypes`. Only the stable public API of OpenJPEG 2.x is used. Pillow's ``reduce``
does the same but refuses images whose reduced size it rounds differently from OpenJPEG
(``docs/decisions.md``; ``python -m bench.jpeg2000`` compares the two).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ...errors import BodyPartRouterError
from ..resample import area_reduce, reduction_factor
from .encapsulated import frame_bytes

if TYPE_CHECKING:
    from ..geometry import Geometry

_OPJ_CODEC_J2K = 0
_OPJ_CODEC_JP2 = 2
#: ``sizeof(opj_dparameters_t)`` is about 8.3 KB in OpenJPEG 2.x; over-allocate.
_DPARAMETERS_SIZE = 16384


class _ImageComp(ctypes.Structure):
    _fields_ = [
        ("dx", ctypes.c_uint32), ("dy", ctypes.c_uint32),
        ("w", ctypes.c_uint32), ("h", ctypes.c_uint32),
        ("x0", ctypes.c_uint32), ("y0", ctypes.c_uint32),
        ("prec", ctypes.c_uint32), ("bpp", ctypes.c_uint32), ("sgnd", ctypes.c_uint32),
        ("resno_decoded", ctypes.c_uint32), ("factor", ctypes.c_uint32),
        ("data", ctypes.POINTER(ctypes.c_int32)),
        ("alpha", ctypes.c_uint16),
    ]


class _Image(ctypes.Structure):
    _fields_ = [
        ("x0", ctypes.c_uint32), ("y0", ctypes.c_uint32),
        ("x1", ctypes.c_uint32), ("y1", ctypes.c_uint32),
        ("numcomps", ctypes.c_uint32), ("color_space", ctypes.c_int),
        ("comps", ctypes.POINTER(_ImageComp)),
        ("icc_profile_buf", ctypes.c_void_p), ("icc_profile_len", ctypes.c_uint32),
    ]


_READ_FN = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_SKIP_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_SEEK_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)
_MSG_FN = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)


class Jpeg2000Image(NamedTuple):
    """The first component of a decoded code-stream, with its sample precision and signedness."""

    pixels: np.ndarray  #: int32, as OpenJPEG returns samples
    precision: int      #: bits per sample in the code-stream (may differ from DICOM Bits Stored)
    signed: bool


class Jpeg2000Error(BodyPartRouterError, RuntimeError):
    """OpenJPEG could not decode the code-stream (the message is OpenJPEG's own)."""


def _candidate_libraries() -> list[str]:
    paths: list[str] = []
    try:  # the extension module of pylibjpeg-openjpeg links OpenJPEG statically and exports its API
        import openjpeg  # noqa: F401  (imported for its location only)

        site = Path(openjpeg.__file__).resolve().parent.parent
        paths += [str(p) for p in sorted(site.glob("_openjpeg*.so"))]
    except ImportError:
        pass
    system = ctypes.util.find_library("openjp2")
    if system:
        paths.append(system)
    return paths


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    for path in _candidate_libraries():
        try:
            lib = ctypes.CDLL(path)
            lib.opj_set_decoded_resolution_factor  # noqa: B018  (probe: needs OpenJPEG >= 2.3)
        except (OSError, AttributeError):
            continue
        lib.opj_create_decompress.restype = ctypes.c_void_p
        lib.opj_create_decompress.argtypes = [ctypes.c_int]
        lib.opj_set_default_decoder_parameters.argtypes = [ctypes.c_void_p]
        lib.opj_setup_decoder.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.opj_set_error_handler.argtypes = [ctypes.c_void_p, _MSG_FN, ctypes.c_void_p]
        lib.opj_set_decoded_resolution_factor.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.opj_stream_create.restype = ctypes.c_void_p
        lib.opj_stream_create.argtypes = [ctypes.c_size_t, ctypes.c_int]
        lib.opj_stream_set_read_function.argtypes = [ctypes.c_void_p, _READ_FN]
        lib.opj_stream_set_skip_function.argtypes = [ctypes.c_void_p, _SKIP_FN]
        lib.opj_stream_set_seek_function.argtypes = [ctypes.c_void_p, _SEEK_FN]
        lib.opj_stream_set_user_data_length.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.opj_read_header.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(_Image))]
        lib.opj_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_Image)]
        lib.opj_end_decompress.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.opj_stream_destroy.argtypes = [ctypes.c_void_p]
        lib.opj_destroy_codec.argtypes = [ctypes.c_void_p]
        lib.opj_image_destroy.argtypes = [ctypes.POINTER(_Image)]
        return lib
    return None


def available() -> bool:
    """True when an OpenJPEG library with resolution-factor support could be loaded."""
    return _library() is not None


def decomposition_levels(codestream: bytes) -> int | None:
    """Number of wavelet decompositions in the main header's COD marker (None if not found).

    Asking for more reductions than that makes OpenJPEG fail, so callers cap
    their reduction with it.
    """
    if codestream[:4] != b"\xff\x4f\xff\x51":  # SOC then SIZ: a raw code-stream
        start = codestream.find(b"\xff\x4f\xff\x51")  # JP2 box wrapper: find the code-stream
        if start < 0:
            return None
        codestream = codestream[start:]
    pos = 2
    while pos + 4 <= len(codestream):
        marker, length = struct.unpack(">HH", codestream[pos : pos + 4])
        if marker == 0xFF52 and pos + 9 < len(codestream):  # COD: Lcod Scod SGcod(4) SPcod...
            return codestream[pos + 9]
        if marker == 0xFF90 or marker < 0xFF00:  # first tile-part or garbage: header over
            return None
        pos += 2 + length
    return None


def without_trailing_segments(codestream: bytes) -> bytes | None:
    """The code-stream cut after its last tile-part and closed by EOC, or None if nothing to cut.

    Some encoders write a marker segment (a COM "PADDING" comment, for one)
    between the last tile-part and EOC, which OpenJPEG rejects with "Stream
    too short, expected SOT". Tile-part lengths (Psot) locate the real end.
    """
    pos = codestream.find(b"\xff\x90")
    if pos < 0:
        return None
    while codestream[pos : pos + 2] == b"\xff\x90" and pos + 10 <= len(codestream):
        (psot,) = struct.unpack(">I", codestream[pos + 6 : pos + 10])
        if psot == 0:  # "until EOC": nothing to locate
            return None
        pos += psot
    if pos >= len(codestream) - 2 or codestream[pos : pos + 2] == b"\xff\xd9":
        return None
    return codestream[:pos] + b"\xff\xd9"


def decode(codestream: bytes, reduce: int = 0) -> Jpeg2000Image:
    """Decode the first component of a JPEG 2000 code-stream at ``1 / 2**reduce`` resolution.

    The samples come as ``int32`` (OpenJPEG's native type, signedness already
    applied). Raises :class:`Jpeg2000Error` when OpenJPEG refuses the
    data, and :class:`RuntimeError` when no OpenJPEG library is loadable.
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("no OpenJPEG library with resolution-factor support found")
    data = bytes(codestream)
    fmt = _OPJ_CODEC_J2K if data[:2] == b"\xff\x4f" else _OPJ_CODEC_JP2
    errors: list[str] = []
    position = 0
    src = ctypes.c_char_p(data)
    src_address = ctypes.cast(src, ctypes.c_void_p).value or 0

    @_READ_FN
    def read(buffer: int, size: int, _user: int) -> int:
        nonlocal position
        remaining = len(data) - position
        if remaining <= 0:
            return ctypes.c_size_t(-1).value
        n = min(size, remaining)
        ctypes.memmove(buffer, src_address + position, n)
        position += n
        return n

    @_SKIP_FN
    def skip(offset: int, _user: int) -> int:
        nonlocal position
        offset = max(-position, min(offset, len(data) - position))
        position += offset
        return offset

    @_SEEK_FN
    def seek(offset: int, _user: int) -> int:
        nonlocal position
        if not 0 <= offset <= len(data):
            return 0
        position = offset
        return 1

    @_MSG_FN
    def on_error(message: bytes, _user: int) -> None:
        errors.append(message.decode("ascii", "replace").strip())

    codec = lib.opj_create_decompress(fmt)
    stream = lib.opj_stream_create(1 << 20, 1)
    image = ctypes.POINTER(_Image)()
    params = ctypes.create_string_buffer(_DPARAMETERS_SIZE)
    try:
        lib.opj_set_error_handler(codec, on_error, None)
        lib.opj_set_default_decoder_parameters(params)
        lib.opj_stream_set_read_function(stream, read)
        lib.opj_stream_set_skip_function(stream, skip)
        lib.opj_stream_set_seek_function(stream, seek)
        lib.opj_stream_set_user_data_length(stream, len(data))
        ok = (
            lib.opj_setup_decoder(codec, params)
            and lib.opj_read_header(stream, codec, ctypes.byref(image))
            and lib.opj_set_decoded_resolution_factor(codec, reduce)
            and lib.opj_decode(codec, stream, image)
            and lib.opj_end_decompress(codec, stream)
        )
        if not ok or not image:
            raise Jpeg2000Error("; ".join(errors) or "OpenJPEG failed to decode the code-stream")
        comp = image.contents.comps[0]
        h, w = comp.h, comp.w
        if not comp.data or h == 0 or w == 0:
            raise Jpeg2000Error("OpenJPEG returned an empty image")
        pixels = np.ctypeslib.as_array(comp.data, shape=(h, w)).copy()
        return Jpeg2000Image(pixels, int(comp.prec), bool(comp.sgnd))
    finally:
        if image:
            lib.opj_image_destroy(image)
        lib.opj_stream_destroy(stream)
        lib.opj_destroy_codec(codec)


def jpeg2000_frame(pixel_data: "bytes | memoryview", g: Geometry, factor: int, target: int) -> tuple[np.ndarray, int]:
    """Decode at the coarsest resolution level whose short side is still >= ``target``."""
    stream = frame_bytes(pixel_data, g)
    level = int(math.log2(factor)) if factor > 1 else 0
    levels = decomposition_levels(stream)
    if levels is not None:
        level = min(level, levels)
    try:
        decoded = decode(stream, level)
    except Jpeg2000Error as first:
        repaired = without_trailing_segments(stream)
        if repaired is None:
            raise first
        decoded = decode(repaired, level)
    # Lower resolution levels ring slightly outside the sample range: clip to the range of the
    # code-stream's own precision (which some writers set above Bits Stored), don't wrap.
    arr, bits = decoded.pixels, max(1, min(decoded.precision, 31))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if decoded.signed else (0, (1 << bits) - 1)
    np.clip(arr, low, high, out=arr)
    rest = reduction_factor(arr.shape, target)
    reduced = area_reduce(arr.astype(np.float32) if rest > 1 else arr, rest)
    return reduced, (1 << level) * rest
