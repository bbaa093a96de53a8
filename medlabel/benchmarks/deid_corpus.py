"""A planted-PHI corpus built from pydicom's bundled real DICOM files (tests and `medlabel bench deid`).

Every planted value is unique and searchable, so a test can look for each one in the output bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Quixote^Dulcinea^Maria"
PATIENT_ID = "MRN-7781-QX"


@dataclass
class Planted:
    data: bytes
    values: set[str] = field(default_factory=set)  # every original identifying value planted


def real(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return pydicom.dcmread(path)


def plant(ds: Dataset, tag: str, patient_id: str = PATIENT_ID, name: str = PATIENT_NAME,
          study_uid: str | None = None, series_uid: str | None = None) -> Planted:
    """Plant PHI of every attribute class into a real dataset."""
    values = {patient_id, "Dulcinea", "Quixote", "Maria", f"Dr^Sancho{tag}", f"Sancho{tag}",
              f"ACC{tag}99881", "19610403", f"Hospital of La Mancha {tag}", f"12 Windmill Road {tag}",
              f"Station{tag}Z", f"Other-ID-{tag}", f"Alias^Person{tag}", f"Private secret {tag}",
              f"req-{tag}-551", f"Comment about Quixote {tag}", f"+34 555 01{tag}"}
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19610403"
    ds.PatientAddress = f"12 Windmill Road {tag}"
    ds.PatientTelephoneNumbers = f"+34 555 01{tag}"
    ds.ReferringPhysicianName = f"Dr^Sancho{tag}"
    ds.AccessionNumber = f"ACC{tag}99881"
    ds.InstitutionName = f"Hospital of La Mancha {tag}"
    ds.StationName = f"Station{tag}Z"
    ds.StudyDescription = f"Chest CT for Quixote {tag}"  # cleaned: the name must go, the rest may stay
    ds.ImageComments = f"Comment about Quixote {tag}"
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate, ds.ContentDate = "20240110", "20240110", "20240111", "20240111"
    ds.StudyTime = "101500"
    other = Dataset()
    other.PatientID = f"Other-ID-{tag}"
    other.IssuerOfPatientID = "Old hospital"
    ds.OtherPatientIDsSequence = Sequence([other])
    person = Dataset()
    person.PersonName = f"Alias^Person{tag}"
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.RequestAttributesSequence[0].RequestedProcedureID = f"req-{tag}-551"
    ds.RequestAttributesSequence[0].ScheduledProcedureStepDescription = "Routine"
    ds.ContentSequence = Sequence([person])  # nested PN in an X sequence
    block = ds.private_block(0x0011, "MEDLABEL TEST", create=True)
    block.add_new(0x01, "LO", f"Private secret {tag}")
    if study_uid:
        ds.StudyInstanceUID = study_uid
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    values |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
    if "FrameOfReferenceUID" in ds:
        values.add(str(ds.FrameOfReferenceUID))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return Planted(out.getvalue(), values)


def study_pair() -> tuple[Planted, Planted]:
    """Two files of one study: B references A (ReferencedImageSequence) and shares its frame of reference."""
    study, series = generate_uid(), generate_uid()
    a = real("CT_small.dcm")
    b = real("CT_small.dcm")
    b.SOPInstanceUID = generate_uid()
    b.file_meta.MediaStorageSOPInstanceUID = b.SOPInstanceUID
    ref = Dataset()
    ref.ReferencedSOPClassUID = a.SOPClassUID
    ref.ReferencedSOPInstanceUID = a.SOPInstanceUID
    b.ReferencedImageSequence = Sequence([ref])
    b.StudyDate = "20240110"
    return plant(a, "A", study_uid=study, series_uid=series), plant(b, "B", study_uid=study, series_uid=series)


def text_image(bits: int, text: str = "JOHN DOE 1961", shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A smooth gradient with burned-in white text at the top-left."""
    h, w = shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=22)
    except TypeError:  # older Pillow
        font = ImageFont.load_default()
    draw.text((12, 10), text, fill=255, font=font)
    mask = np.asarray(canvas) > 0
    base = np.tile(np.linspace(10, 90, w), (h, 1))
    top = (1 << bits) - 1
    arr = np.where(mask, top, base * top / 255).astype(np.uint16 if bits > 8 else np.uint8)
    return arr


def dicom_from_array(arr: np.ndarray, modality: str = "OT", burned_in: str | None = None) -> bytes:
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "Burned^In", "BURN-001"
    if burned_in:
        ds.BurnedInAnnotation = burned_in
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 16 if arr.dtype == np.uint16 else 8
    ds.BitsStored = 12 if arr.dtype == np.uint16 and arr.max() < 4096 else ds.BitsAllocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    ds.PixelData = arr.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
