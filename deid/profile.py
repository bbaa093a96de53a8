"""The PS3.15 Basic Profile table (deid/data/ps315_basic_profile.csv) resolved to one action per tag.

Fail-closed default for attributes the table does not list: numeric, coded (CS) and binary image
attributes are kept; UIDs are remapped unless they are well-known DICOM UIDs (SOP classes,
transfer syntaxes); dates and date-times are shifted or removed; every other free-text VR
(PN, LO, SH, ST, LT, UT, UC, UR, AE, AS) is removed unless its keyword is on ``SAFE_TEXT``,
a short list of technical attributes that carry no identity. Unknown VRs (UN) are removed.
"""

from __future__ import annotations

import csv
import enum
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pydicom.datadict as dd


class Action(enum.StrEnum):
    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    SHIFT = "S"  # a date/time modified by the per-patient shift (Retain Longitudinal ... Modified Dates)


@dataclass(frozen=True)
class Rule:
    keyword: str
    tag: int
    action: str  # the table's code, e.g. "X/Z/D"
    option: str  # "", "dates", "chars" or "desc"


SAFE_TEXT = frozenset({
    "SpecificCharacterSet", "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "ViewPosition",
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue",
    "MappingResource", "ContextIdentifier", "ContextUID", "WindowCenterWidthExplanation", "LUTExplanation",
    "DeidentificationMethod", "ModalityLUTType", "LossyImageCompressionMethod", "PixelPresentation",
    "VolumetricProperties", "VolumeBasedCalculationTechnique", "ContentQualification", "ResonantNucleus",
    "ReceiveCoilName", "TransmitCoilName", "SequenceName", "ScanningSequence", "SequenceVariant", "ScanOptions",
    "MRAcquisitionType", "ConvolutionKernel", "FilterType", "RotationDirection", "ExposureControlMode",
    "TransducerData", "ProcessingFunction", "PresentationIntentType", "ImageLaterality", "Laterality",
    "PatientOrientation", "AnatomicRegionModifierSequence", "FrameType", "DataType", "AcquisitionContrast",
    "ImageType", "PatientPosition", "ConversionType", "FrameOfReferenceUID", "ImplementationVersionName",
    "PatientIdentityRemoved", "LongitudinalTemporalInformationModified", "BurnedInAnnotation",
    "RecognizableVisualFeatures", "PositionReferenceIndicator", "Units", "CorrectedImage", "DecayCorrection",
    "RescaleType", "PixelIntensityRelationship", "ColorSpace", "LossyImageCompression", "PhotometricInterpretation",
    "Modality", "SOPClassUID", "DetectorType", "Grid", "Filter", "TypeOfData", "AcquisitionDeviceType",
})

# Clean Descriptors applies to these technical descriptions only. Free text about the patient
# (comments, history, alerts, allergies, image and frame comments) is removed even with the option:
# cleaning removes only the identifiers it knows, and free text is where unknown ones hide.
CLEANABLE = frozenset({
    "StudyDescription", "SeriesDescription", "ProtocolName", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "ScheduledProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
    "DerivationDescription", "ContrastBolusAgent", "RequestedContrastAgent", "AcquisitionProtocolDescription",
    "ClinicalTrialTimePointDescription", "ModifiedImageDescription", "DeviceDescription",
})

TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "AS"})
DATE_VRS = frozenset({"DA", "DT"})


@cache
def rules() -> dict[int, Rule]:
    """The table, by tag. Raises ValueError if the data file names an attribute pydicom does not know."""
    text = resources.files("deid").joinpath("data/ps315_basic_profile.csv").read_text()
    out: dict[int, Rule] = {}
    for row in csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")):
        tag = dd.tag_for_keyword(row["keyword"])
        if tag is None:
            raise ValueError(f"ps315_basic_profile.csv: unknown keyword {row['keyword']!r}")
        out[int(tag)] = Rule(row["keyword"], int(tag), row["action"], row["option"] or "")
    return out


def resolve(rule: Rule, *, dates: str, keep_characteristics: bool, clean_descriptors: bool) -> Action:
    """One action for a table entry under the chosen options.

    Combined codes keep the attribute present where the standard allows a dummy or empty value
    (Z or D), so Type 1/2 attributes survive; X/Z/U* on a sequence means "recurse and remap UIDs".
    """
    if rule.option == "chars" and keep_characteristics:
        return Action.KEEP
    if rule.option == "dates" and dates == "shift":
        return Action.SHIFT
    if rule.option == "desc" and clean_descriptors and rule.keyword in CLEANABLE:
        return Action.CLEAN
    code = rule.action
    if code == "X/Z/U*":
        return Action.UID
    if code in ("X/Z", "X/Z/D"):
        return Action.ZERO
    if code in ("X/D", "Z/D"):
        return Action.DUMMY
    return Action(code)
