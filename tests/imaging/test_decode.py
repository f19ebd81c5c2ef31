"""Decoding: every transfer syntax, the pixel value pipeline, reduced-size decoding and typed reasons."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from bodypart_router.imaging.codecs import jpeg2000
from bodypart_router.imaging.decode import TARGET_SHORT_SIDE, decode_dicom, decode_file, decode_image_file, sniff
from bodypart_router.errors import NotClassifiable, Reason
from bodypart_router.imaging.preprocess import to_model_input

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CR = "1.2.840.10008.5.1.4.1.1.1"


def make_cr(pixels: np.ndarray, **attributes: object) -> Dataset:
    """A minimal CR dataset around ``pixels`` (uint16 unless given otherwise)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CR
    ds.SOPClassUID = CR
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def gradient(rows: int = 300, cols: int = 200, top: int = 4095) -> np.ndarray:
    return (np.add.outer(np.arange(rows), np.arange(cols)) * top // (rows + cols - 2)).astype(np.uint16)


# ----------------------------------------------------------------------------- committed fixtures


@pytest.mark.parametrize(
    "name, syntax",
    [
        ("chest_mono1.dcm", "1.2.840.10008.1.2.1"),
        ("chest_rle.dcm", "1.2.840.10008.1.2.5"),
        ("chest_jpegls.dcm", "1.2.840.10008.1.2.4.80"),
        ("chest_j2k.dcm", "1.2.840.10008.1.2.4.90"),
    ],
)
def test_lossless_encodings_decode_to_the_same_pixels(fixtures_dir: Path, name: str, syntax: str) -> None:
    reference = decode_file(fixtures_dir / "chest_mono1.dcm")
    image = decode_file(fixtures_dir / name)
    assert image.transfer_syntax_uid == syntax
    assert image.pixels.dtype == np.uint8 and image.pixels.ndim == 2
    assert image.photometric == "MONOCHROME1"
    np.testing.assert_array_equal(image.pixels, reference.pixels)


def test_monochrome1_and_its_monochrome2_inverse_give_the_same_model_input(fixtures_dir: Path) -> None:
    mono1 = decode_file(fixtures_dir / "chest_mono1.dcm")
    mono2 = decode_file(fixtures_dir / "chest_mono2_inverse.dcm")
    assert (mono1.photometric, mono2.photometric) == ("MONOCHROME1", "MONOCHROME2")
    # Equal up to the half-step asymmetry of the DICOM linear window: one gray level at most.
    np.testing.assert_allclose(to_model_input(mono1.pixels), to_model_input(mono2.pixels), atol=3 / 255)


def test_monochrome1_is_inverted_so_bone_is_bright(fixtures_dir: Path) -> None:
    """Raw MONOCHROME1 values are high where the film is dark; the decoded image must be the opposite."""
    raw = pydicom.dcmread(fixtures_dir / "chest_mono1.dcm").pixel_array.astype(float)
    pixels = decode_file(fixtures_dir / "chest_mono1.dcm").pixels.astype(float)
    assert np.corrcoef(raw.ravel(), pixels.ravel())[0, 1] < -0.9


def test_file_without_meta_decodes_as_implicit_little_endian(fixtures_dir: Path) -> None:
    path = fixtures_dir / "tibia_no_meta.dcm"
    assert path.read_bytes()[128:132] != b"DICM"
    image = decode_file(path)
    assert image.transfer_syntax_uid == "1.2.840.10008.1.2"
    assert image.voi == "window 550/1024"


def test_rescale_and_voi_lut_give_the_same_picture_as_the_plain_window(fixtures_dir: Path) -> None:
    plain = decode_file(fixtures_dir / "tibia_no_meta.dcm")
    lut = decode_file(fixtures_dir / "tibia_rescale_voilut.dcm")
    assert lut.voi == "VOI LUT"
    assert np.abs(plain.pixels.astype(int) - lut.pixels.astype(int)).max() <= 1


@pytest.mark.parametrize("name, kind", [("tibia.png", "png"), ("chest.jpg", "jpeg")])
def test_png_and_jpeg_files_decode_as_they_are(fixtures_dir: Path, name: str, kind: str) -> None:
    path = fixtures_dir / name
    assert sniff(path.read_bytes()[:132]) == kind
    image = decode_file(path)
    assert image.source_format == kind and image.pixels.dtype == np.uint8 and image.pixels.ndim == 2
    assert decode_image_file(path.read_bytes()).pixels.shape == image.pixels.shape


def test_bytes_path_and_dataset_sources_agree(fixtures_dir: Path) -> None:
    path = fixtures_dir / "chest_j2k.dcm"
    from_path = decode_dicom(path).pixels
    np.testing.assert_array_equal(decode_dicom(path.read_bytes()).pixels, from_path)
    np.testing.assert_array_equal(decode_dicom(pydicom.dcmread(path)).pixels, from_path)


# ----------------------------------------------------------------------------- pixel value pipeline


def test_first_window_of_several_is_used() -> None:
    ds = make_cr(gradient(), WindowCenter=[1000, 3000], WindowWidth=[500, 2000])
    image = decode_dicom(to_bytes(ds))
    assert image.voi == "window 1000/500"
    assert image.pixels.min() == 0 and image.pixels.max() == 255  # the narrow window saturates both ends


def test_without_window_the_robust_range_of_the_pixels_is_used() -> None:
    image = decode_dicom(to_bytes(make_cr(gradient(top=1000))))
    assert image.voi == "min-max"
    assert image.pixels.min() <= 2 and image.pixels.max() >= 253


def test_a_window_outside_the_pixel_values_is_ignored() -> None:
    image = decode_dicom(to_bytes(make_cr(gradient(top=1000), WindowCenter=40000, WindowWidth=100)))
    assert image.voi == "min-max"
    assert image.pixels.std() > 50


def test_rescale_slope_and_intercept_apply_before_the_window() -> None:
    plain = decode_dicom(to_bytes(make_cr(gradient(), WindowCenter=2048, WindowWidth=4096)))
    stored = (gradient() // 2 + 100).astype(np.uint16)  # value = 2 * stored - 200
    rescaled = decode_dicom(to_bytes(make_cr(stored, RescaleSlope=2, RescaleIntercept=-200,
                                             WindowCenter=2048, WindowWidth=4096)))
    assert np.abs(plain.pixels.astype(int) - rescaled.pixels.astype(int)).max() <= 1


def test_unused_high_bits_are_masked() -> None:
    clean = gradient()
    dirty = clean | np.uint16(0xF000)  # overlay garbage above Bits Stored = 12
    attrs = dict(BitsStored=12, HighBit=11, WindowCenter=2048, WindowWidth=4096)
    np.testing.assert_array_equal(
        decode_dicom(to_bytes(make_cr(dirty, **attrs))).pixels,
        decode_dicom(to_bytes(make_cr(clean, **attrs))).pixels,
    )


def test_signed_pixels_with_unused_bits_are_sign_extended() -> None:
    values = (gradient().astype(np.int32) - 2048).astype(np.int16)  # -2048 .. 2047
    masked = (values.view(np.uint16) & 0x0FFF).view(np.int16)  # as a 12-bit writer leaves them
    attrs = dict(BitsStored=12, HighBit=11, WindowCenter=0, WindowWidth=4096)
    np.testing.assert_array_equal(
        decode_dicom(to_bytes(make_cr(masked, **attrs))).pixels,
        decode_dicom(to_bytes(make_cr(values, **attrs))).pixels,
    )


def test_presentation_lut_shape_inverse_inverts_monochrome2() -> None:
    normal = decode_dicom(to_bytes(make_cr(gradient()))).pixels.astype(int)
    inverse = decode_dicom(to_bytes(make_cr(gradient(), PresentationLUTShape="INVERSE"))).pixels.astype(int)
    assert np.abs(normal + inverse - 255).max() <= 1


def test_multi_frame_images_use_the_middle_frame() -> None:
    frames = np.zeros((3, 64, 64), np.uint16)
    for k in range(3):
        frames[k, :, k * 20 : k * 20 + 20] = 1000  # a bright band in a different place per frame
    image = decode_dicom(to_bytes(make_cr(frames, NumberOfFrames=3)))
    assert (image.frame_index, image.number_of_frames) == (1, 3)
    assert image.pixels[:, 20:40].mean() > 200 and image.pixels[:, :20].mean() < 50


def test_colour_images_become_luma() -> None:
    rgb = np.zeros((50, 60, 3), np.uint8)
    rgb[..., 1] = 200  # pure green
    ds = make_cr(np.zeros((50, 60), np.uint8), SamplesPerPixel=3, PhotometricInterpretation="RGB",
                 PlanarConfiguration=0, Modality="OT", SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    image = decode_dicom(to_bytes(ds))
    assert image.pixels.shape == (50, 60)
    assert abs(int(image.pixels.mean()) - round(0.587 * 200)) <= 1


# ----------------------------------------------------------------------------- reduced-size decoding


def test_large_images_are_reduced_to_just_above_the_model_input() -> None:
    big = np.random.default_rng(0).integers(0, 4096, (3000, 2500), dtype=np.uint16)
    image = decode_dicom(to_bytes(make_cr(big, BitsStored=12, HighBit=11)))
    assert image.reduction == 2500 // TARGET_SHORT_SIDE
    assert image.pixels.shape == (3000 // image.reduction, 2500 // image.reduction)
    assert TARGET_SHORT_SIDE <= min(image.pixels.shape) < 2 * TARGET_SHORT_SIDE
    assert (image.source_rows, image.source_columns) == (3000, 2500)


def test_jpeg2000_decodes_at_a_reduced_resolution_level_close_to_the_full_image() -> None:
    full = decode_file(get_testdata_file("RG1_UNCR.dcm"))
    j2k = decode_file(get_testdata_file("RG1_J2KR.dcm"))
    assert jpeg2000.available()
    assert j2k.reduction == 8 and abs(j2k.pixels.shape[0] - full.pixels.shape[0]) <= 1
    h = min(full.pixels.shape[0], j2k.pixels.shape[0])
    w = min(full.pixels.shape[1], j2k.pixels.shape[1])
    diff = np.abs(full.pixels[:h, :w].astype(int) - j2k.pixels[:h, :w].astype(int))
    assert diff.mean() < 3  # wavelet low-pass vs area average: the same picture


def test_jpeg2000_with_a_segment_after_the_last_tile_part_is_repaired() -> None:
    """Some encoders put a marker segment between the last tile-part and EOC (OpenJPEG rejects it)."""
    pixels = gradient(64, 64)
    ds = make_cr(pixels, BitsStored=12, HighBit=11)
    ds.compress(JPEG2000Lossless)
    from pydicom.encaps import encapsulate, get_frame

    stream = get_frame(ds.PixelData, 0, number_of_frames=1)
    body = stream[: stream.rindex(b"\xff\xd9")]  # without EOC (and the even-length padding byte)
    comment = b"\xff\x64\x00\x0b\x00\x01PADDING"  # COM segment, as in pylibjpeg-data's 966.dcm
    ds.PixelData = encapsulate([body + comment + b"\xff\xd9"])
    with pytest.raises(jpeg2000.Jpeg2000Error, match="expected SOT"):
        jpeg2000.decode(get_frame(ds.PixelData, 0, number_of_frames=1))
    image = decode_dicom(to_bytes(ds))
    assert image.pixels.shape == (64, 64)


# ----------------------------------------------------------------------------- typed reasons


def reason_of(data: bytes | Path) -> NotClassifiable:
    with pytest.raises(NotClassifiable) as caught:
        decode_file(data) if isinstance(data, Path) else decode_dicom(data)
    return caught.value


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert reason_of(tmp_path / "empty.dcm").reason is Reason.EMPTY_FILE


def test_not_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("patient notes, not an image\n" * 20)
    assert reason_of(tmp_path / "notes.txt").reason is Reason.NOT_DICOM
    assert reason_of(tmp_path).reason is Reason.NOT_DICOM  # a folder


def test_no_pixel_data() -> None:
    ds = make_cr(gradient(8, 8))
    del ds.PixelData
    error = reason_of(to_bytes(ds))
    assert error.reason is Reason.NO_PIXEL_DATA and "(7FE0,0010)" in error.detail


def test_non_projection_modality_and_non_image_sop_class() -> None:
    assert reason_of(to_bytes(make_cr(gradient(8, 8), Modality="CT"))).reason is Reason.NON_PROJECTION_MODALITY
    sr = make_cr(gradient(8, 8), SOPClassUID="1.2.840.10008.5.1.4.1.1.88.22")
    assert reason_of(to_bytes(sr)).reason is Reason.NON_IMAGE_SOP


def test_pixel_data_shorter_than_the_geometry_names_the_tags() -> None:
    ds = make_cr(gradient(100, 100))
    ds.Rows, ds.Columns = 3000, 2500
    error = reason_of(to_bytes(ds))
    assert error.reason is Reason.INCONSISTENT_PIXELS
    assert error.detail == (
        "Rows (0028,0010) 3000 x Columns (0028,0011) 2500 x Bits Allocated (0028,0100) 16 needs 15000000 bytes, "
        "Pixel Data (7FE0,0010) has 20000"
    )


def test_absurd_sizes_are_refused_before_decoding() -> None:
    ds = make_cr(gradient(8, 8))
    ds.Rows, ds.Columns = 60000, 60000
    error = reason_of(to_bytes(ds))
    assert error.reason is Reason.IMAGE_TOO_LARGE and "(0028,0010)" in error.detail


def test_missing_rows_is_an_invalid_attribute() -> None:
    ds = make_cr(gradient(8, 8))
    del ds.Rows
    error = reason_of(to_bytes(ds))
    assert error.reason is Reason.INVALID_ATTRIBUTE and "Rows (0028,0010)" in error.detail


def test_unknown_transfer_syntax() -> None:
    ds = make_cr(gradient(8, 8))
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"
    assert reason_of(to_bytes(ds)).reason is Reason.UNSUPPORTED_TRANSFER_SYNTAX


def test_garbage_in_a_compressed_frame_is_undecodable() -> None:
    from pydicom.encaps import encapsulate

    ds = make_cr(gradient(64, 64))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 4])
    error = reason_of(to_bytes(ds))
    assert error.reason is Reason.UNDECODABLE_PIXELS and "(7FE0,0010)" in error.detail


# ----------------------------------------------------------------------------- real files


def _manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_shared_dicom_decodes(shared_dicom_dir: Path) -> None:
    rows = _manifest(shared_dicom_dir)
    assert len(rows) >= 10
    for row in rows:
        image = decode_file(shared_dicom_dir / row["file"])
        assert min(image.pixels.shape) >= 100, row["file"]
        assert (image.source_rows, image.source_columns) == (int(row["rows"]), int(row["cols"])), row["file"]
        assert image.photometric == row["photometric"], row["file"]
        assert 10 < image.pixels.mean() < 245, row["file"]  # neither blank nor saturated


@pytest.mark.parametrize("broken, fixed", [("966.dcm", "966_fixed.dcm"), ("RG2_JPLY.dcm", "RG2_JPLY_fixed.dcm")])
def test_the_two_broken_originals_decode_like_their_fixed_copies(shared_dicom_dir: Path, broken: str, fixed: str) -> None:
    """966.dcm has a COM segment after its last JPEG 2000 tile-part, repaired before decoding;
    RG2_JPLY.dcm is 12-bit JPEG Extended with an encoder defect that GDCM's libjpeg tolerates."""
    a = decode_file(shared_dicom_dir / broken).pixels
    b = decode_file(shared_dicom_dir / fixed).pixels
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("stem", ["RG1", "RG3"])
def test_pydicom_data_radiographs_decode_alike_in_every_encoding(stem: str) -> None:
    reference = decode_file(get_testdata_file(f"{stem}_UNCR.dcm")).pixels
    for suffix in ("UNCI", "J2KR", "J2KI"):
        pixels = decode_file(get_testdata_file(f"{stem}_{suffix}.dcm")).pixels
        small = [np.asarray(p, np.float32) for p in (reference, pixels)]
        shape = (224, 224)
        import cv2

        a, b = (cv2.resize(p, shape, interpolation=cv2.INTER_AREA) for p in small)
        assert np.abs(a - b).mean() < 4, suffix


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
def test_area_reduce_is_the_rounded_mean_of_each_whole_block(dtype: type) -> None:
    from bodypart_router.imaging.resample import area_reduce

    rng = np.random.default_rng(7)
    high = 200 if dtype is np.uint8 else 30000
    image = rng.integers(-high if np.dtype(dtype).kind == "i" else 0, high, size=(23, 31)).astype(dtype)
    reduced = area_reduce(image, 4)
    assert reduced.shape == (5, 7) and reduced.dtype == image.dtype  # remainders of 3 rows, 3 columns left out
    expected = image[:20, :28].astype(np.float64).reshape(5, 4, 7, 4).mean(axis=(1, 3))
    if np.dtype(dtype).kind in "iu":
        expected = np.floor(expected + 0.5)
    np.testing.assert_allclose(reduced.astype(np.float64), expected, atol=1e-3)


def test_area_reduce_keeps_colour_channels_and_tiny_images() -> None:
    from bodypart_router.imaging.resample import area_reduce

    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 1] = 100
    assert area_reduce(colour, 2).shape == (4, 4, 3) and (area_reduce(colour, 2)[..., 1] == 100).all()
    assert area_reduce(np.full((3, 3), 9, np.uint16), 4).shape == (1, 1)  # smaller than a block
