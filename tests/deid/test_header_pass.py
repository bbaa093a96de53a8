"""The header pass's shortcuts (issue 15: header-only de-identification at least 1.2x the fastest peer) keep
its output and its refusals: uncompressed pixels nothing looks at are checked, not decoded, and pass through;
kept elements are written from their original bytes; private elements go at every level; the output is
written in two parts, byte for byte what pydicom writes whole; descriptors lose exactly what a
case-insensitive regex removes."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import deid
from deid import writing
from deid.tags import _remove
from medlabel.benchmarks.deid_corpus import dicom_from_array, plant, real
from medlabel.errors import DicomReadError, InputError

KEY = bytes(range(32))
HEADER_ONLY = deid.DeidOptions(scan_pixels=False)


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_uncompressed_pixels_are_not_decoded_without_a_scan_and_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    data = plant(real("CT_small.dcm"), "P").data
    original = pydicom.dcmread(io.BytesIO(data)).PixelData

    def no_decoding(self: Dataset) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(Dataset, "pixel_array", property(no_decoding))
    result = deid.deidentify_bytes(data, key=KEY, name="ct.dcm", options=HEADER_ONLY)
    assert result.status == "released", result.reason
    assert pydicom.dcmread(io.BytesIO(result.output or b"")).PixelData == original
    assert result.report["decompressed"] is False and result.report["pixels_scanned"] is False


@pytest.mark.parametrize("scan", [False, True])
def test_pixel_data_shorter_than_its_attributes_is_still_refused(scan: bool) -> None:
    ds = real("CT_small.dcm")
    ds.Rows = int(ds.Rows) * 2  # the pixel data now holds half the declared frame
    with pytest.raises(DicomReadError, match="short.dcm: cannot decode pixel data"):
        deid.deidentify_bytes(_bytes(ds), key=KEY, name="short.dcm", options=deid.DeidOptions(scan_pixels=scan),
                              ocr=lambda img: [])


def test_private_elements_go_at_every_level() -> None:
    ds = real("CT_small.dcm")
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    inner = item.private_block(0x0009, "ACME NESTED", create=True)
    inner.add_new(0x01, "LO", "nested private secret")
    ds.ReferencedImageSequence = Sequence([item])
    ds.private_block(0x0029, "ACME TOP", create=True).add_new(0x02, "UN", b"top private secret")
    result = deid.deidentify_bytes(_bytes(ds), key=KEY, name="p.dcm", options=HEADER_ONLY)
    out = pydicom.dcmread(io.BytesIO(result.output or b""))
    assert not [e for e in out.iterall() if e.tag.is_private]
    assert len(out.ReferencedImageSequence) == 1  # the sequence stays, without its private block
    assert b"private secret" not in (result.output or b"")


def test_kept_elements_are_written_from_their_original_bytes() -> None:
    ds = real("CT_small.dcm")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    data = _bytes(ds)
    raw = pydicom.dcmread(io.BytesIO(data)).get_item(0x00080008)
    encoded = b"\x08\x00\x08\x00CS" + len(raw.value).to_bytes(2, "little") + raw.value
    result = deid.deidentify_bytes(data, key=KEY, name="k.dcm", options=HEADER_ONLY)
    assert encoded in (result.output or b"")
    assert pydicom.dcmread(io.BytesIO(result.output or b"")).ImageType == ["ORIGINAL", "PRIMARY", "AXIAL"]


def test_a_value_inside_a_kept_technical_attribute_is_excused_but_a_name_is_not() -> None:
    # rtplan.dcm names its institution "Here" (nested) and keeps "Manufacturer name here": the kept
    # attribute's words are read from the original only for such a hit, and excuse it
    result = deid.deidentify_bytes(plant(real("rtplan.dcm"), "H").data, key=KEY, name="plan.dcm", options=HEADER_ONLY)
    assert result.status == "released", result.reason
    assert b"name here" in (result.output or b"")
    ds = real("CT_small.dcm")
    ds.Manufacturer = "Quixote Imaging"  # the patient's name in a kept attribute: never excused
    refused = deid.deidentify_bytes(plant(ds, "N").data, key=KEY, name="n.dcm", options=HEADER_ONLY)
    assert refused.status == "refused" and refused.output is None


@pytest.mark.parametrize(("bits", "side", "vr"), [(8, 7, None), (8, 8, None), (16, 5, None), (16, 4, "OB")])
def test_the_split_write_is_byte_for_byte_the_whole_write(bits: int, side: int, vr: str | None) -> None:
    arr = (np.arange(side * side) % 200).astype(np.uint8 if bits == 8 else np.uint16).reshape(side, side)
    ds = pydicom.dcmread(io.BytesIO(dicom_from_array(arr)))
    if vr:
        ds["PixelData"].VR = vr
    output, header = writing.serialise_split(ds)  # the function under test
    assert output == writing.serialise(ds)  # pydicom's own whole write
    assert header == output[: output.rfind(b"\xe0\x7f\x10\x00")]
    assert pydicom.dcmread(io.BytesIO(output)).pixel_array.tolist() == arr.tolist()


@pytest.mark.parametrize(("token", "text"), [
    ("Quixote", "Chest CT for QUIXOTE and quixote"),
    ("Smith", "no name here"),
    ("kelvin", "\u212aELVIN scale"),  # the Kelvin sign matches k case-insensitively
    ("sam", "\u017fAM long s"),  # so does the long s for s
    ("\u212aelvin", "KELVIN"),
    ("istanbul", "\u0130STANBUL"),
    ("stra\u00dfe", "STRASSE und Stra\u00dfe"),
    ("ab.c", "abxc ab.c"),  # the token is a literal, not a pattern
])
def test_descriptor_removal_is_the_case_insensitive_regex(token: str, text: str) -> None:
    assert _remove(token, text) == re.sub(re.escape(token), "", text, flags=re.IGNORECASE)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "SC_rgb_gdcm_KY.dcm",
                                  "priv_SQ.dcm", "JPEG2000.dcm"])
def test_the_direct_write_is_byte_for_byte_what_pydicom_writes(name: str) -> None:
    def load() -> Dataset:
        ds = real(name)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.StudyDescription = "changed"  # one element decoded and changed, the others as read
        return ds

    with disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some of pydicom's test files break value rules, as the engine allows
        expected = io.BytesIO()
        load().save_as(expected, enforce_file_format=True, implicit_vr=False, little_endian=True)
        assert writing.write_explicit_le(load()) == expected.getvalue()  # the function under test


def test_big_endian_input_is_still_refused_not_rewritten() -> None:
    ds = real("MR_small_bigendian.dcm")
    assert not writing.can_write_directly(ds)  # save_as refuses to convert it, and so do we
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(InputError, match="be.dcm: cannot be de-identified"):
        deid.deidentify_bytes(out.getvalue(), key=KEY, name="be.dcm", options=HEADER_ONLY)
