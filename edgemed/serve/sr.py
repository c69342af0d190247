"""The result as DICOM: a Comprehensive SR (highdicom) with a coded finding that references the
source image, in the shape of a TID 1500 measurement report (not claiming conformance to it).

    CONTAINER  Imaging Measurement Report (DCM 126000)
      HAS OBS CONTEXT  Observer Type = Device; Device Observer UID / Name / Manufacturer / Model
      CONTAINS  IMAGE    Source of Measurement (DCM 121112) -> the source SOP instance
      CONTAINS  CODE     Finding (DCM 121071) = the decision (99EDGEMED code = class name)
      CONTAINS  NUM      Probability of <class> (one per class, UCUM "1")
      CONTAINS  NUM      Operating threshold
    Multi-label: instead of the decision and the flat NUMs, one Finding (DCM 121071) per reported
    label (99EDGEMED code = the label), HAS PROPERTIES: Presence (SCT 52101004 present / 2667000
    absent), Probability of <label>, Operating threshold of <label>.
    Multi-class: the Finding is the predicted class (argmax), then a probability per class.
      CONTAINS  TEXT     Algorithm Name (DCM 111001), Algorithm Version (DCM 111003) = bundle id,
                         bundle SHA-256, runtime
Every UID of the SR is derived from the source SOP Instance UID and the bundle id (`derived_uid`),
so processing the same instance again with the same bundle makes the very same SR: a PACS stores
it once. The Device Observer UID is derived from the bundle id alone: it changes with the bundle.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from pydicom.dataset import Dataset

SCHEME = "99EDGEMED"
MANUFACTURER = "edgemed"


# Name-based (version 5) UUIDs under one namespace -> 2.25.<uuid as integer> (PS3.5 B.2).
NAMESPACE = uuid.UUID("7f1d3f2e-7c5b-5a8e-9d44-6c1e0b1e5d15")


def derived_uid(*parts: str) -> str:
    """A deterministic UID from the parts: the same parts always give the same UID."""
    return f"2.25.{uuid.uuid5(NAMESPACE, '|'.join(str(p) for p in parts)).int}"


@dataclass(frozen=True)
class Algorithm:
    """Which bundle made a result (IHE AI Results: identify the algorithm and its version)."""

    bundle_id: str
    bundle_sha256: str
    name: str
    version: str
    runtime: str

    @property
    def device_uid(self) -> str:
        return derived_uid("edgemed-device", self.bundle_id)


@dataclass(frozen=True)
class SrUids:
    series: str
    instance: str

    @classmethod
    def for_source(cls, source_uid: str, bundle_id: str) -> SrUids:
        return cls(
            derived_uid("edgemed-sr-series", source_uid, bundle_id),
            derived_uid("edgemed-sr", source_uid, bundle_id),
        )


def _code(value: str, meaning: str, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value[:16], scheme, meaning[:64])


def build_sr(source: Dataset, result: dict, algo: Algorithm) -> Dataset:
    """The SR for `result` (the predict JSON) on `source` (the image's header)."""
    import highdicom.sr as hsr

    uids = SrUids.for_source(str(source.SOPInstanceUID), algo.bundle_id)
    source = _with_type2(source)
    root = hsr.ContainerContentItem(_code("126000", "Imaging Measurement Report", "DCM"))
    root.ContentSequence = hsr.ContentSequence(
        [*_observer(algo), _source_image(source), *_finding(result), *_algorithm(algo)]
    )
    sr = hsr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=uids.series,
        series_number=9901,
        sop_instance_uid=uids.instance,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"edgemed AI result ({algo.name})"[:64],
    )
    sr.SoftwareVersions = algo.version[:64]
    sr.DeviceUID = algo.device_uid
    return sr


# What the SR takes from its evidence (patient and study modules, the reference itself); Type 2
# attributes are present, empty = unknown, when the source lacks them.
TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
COPIED = (
    "SpecificCharacterSet",
    "ReferringPhysicianName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    *TYPE2,
)


def _with_type2(source: Dataset) -> Dataset:
    """A small evidence dataset: only what the SR copies, so highdicom has less to walk."""
    ds = Dataset()
    for key in COPIED:
        if key in source:
            setattr(ds, key, source[key].value)
        elif key in TYPE2:
            setattr(ds, key, "")
    return ds


def _observer(algo: Algorithm) -> list:
    import highdicom.sr as hsr

    ctx = "HAS OBS CONTEXT"
    return [
        hsr.CodeContentItem(
            _code("121005", "Observer Type", "DCM"), _code("121007", "Device", "DCM"), ctx
        ),
        hsr.UIDRefContentItem(_code("121012", "Device Observer UID", "DCM"), algo.device_uid, ctx),
        hsr.TextContentItem(_code("121013", "Device Observer Name", "DCM"), algo.name[:64], ctx),
        hsr.TextContentItem(
            _code("121014", "Device Observer Manufacturer", "DCM"), MANUFACTURER, ctx
        ),
        hsr.TextContentItem(
            _code("121015", "Device Observer Model Name", "DCM"), algo.name[:64], ctx
        ),
    ]


def _source_image(source: Dataset):
    import highdicom.sr as hsr

    return hsr.ImageContentItem(
        _code("121112", "Source of Measurement", "DCM"),
        str(source.SOPClassUID),
        str(source.SOPInstanceUID),
        relationship_type="CONTAINS",
    )


PRESENT = ("52101004", "Present")
ABSENT = ("2667000", "Absent")


def _label_findings(result: dict) -> list:
    """Multi-label: one coded finding per reported label with its presence, probability and
    threshold as properties (the labels the bundle reports: export --labels)."""
    import highdicom.sr as hsr

    unit, props = _code("1", "no units", "UCUM"), "HAS PROPERTIES"
    positive = set(result["decision"])
    items = []
    for (name, p), t in zip(result["probabilities"].items(), result["threshold"], strict=True):
        code = _code(_label_code(name), name)
        item = hsr.CodeContentItem(_code("121071", "Finding", "DCM"), code, "CONTAINS")
        value = PRESENT if name in positive else ABSENT
        item.ContentSequence = hsr.ContentSequence(
            [
                hsr.CodeContentItem(_code("presence", "Presence"), _code(*value, "SCT"), props),
                hsr.NumContentItem(_code(f"p-{name}", f"Probability of {name}"), float(p), unit,
                                   None, props),
                hsr.NumContentItem(_code(f"t-{name}", f"Operating threshold of {name}"),
                                   float(t), unit, None, props),
            ]
        )  # fmt: skip
        items.append(item)
    return items


def _label_code(name: str) -> str:
    """A code value (at most 16 characters) per label: the name, or a digest of a longer one."""
    return name if len(name) <= 16 else "L" + hashlib.sha256(name.encode()).hexdigest()[:15]


def _finding(result: dict) -> list:
    import highdicom.sr as hsr

    if isinstance(result["decision"], list) and isinstance(result["threshold"], list):
        return _label_findings(result)
    decision = result["decision"]
    names = decision if isinstance(decision, list) else [decision]
    items = [
        hsr.CodeContentItem(_code("121071", "Finding", "DCM"), _code(str(n), str(n)), "CONTAINS")
        for n in (names or ["none"])
    ]
    unit = _code("1", "no units", "UCUM")
    for name, p in result["probabilities"].items():
        items.append(
            hsr.NumContentItem(
                _code(f"p-{name}", f"Probability of {name}"), float(p), unit, None, "CONTAINS"
            )
        )
    t = result["threshold"]
    # multilabel contracts carry one threshold per label (a list, in class-name order)
    pairs = (
        [(_code(f"t-{n}", f"Operating threshold of {n}"), v) for n, v in zip(result["probabilities"], t, strict=True)]
        if isinstance(t, list)
        else [(_code("threshold", "Operating threshold"), t)]
    )  # fmt: skip
    items += [hsr.NumContentItem(c, float(v), unit, None, "CONTAINS") for c, v in pairs]
    return items + _domain_qualifier(result)


DOMAIN_MEANINGS = {
    "in": "inside the validated domain",
    "out": "outside the validated domain",
    "unknown": "validated domain unknown (no domain reference)",
}


def _domain_qualifier(result: dict) -> list:
    """A coded item the PACS can show: was the image inside the domain the evidence covers?"""
    import highdicom.sr as hsr

    status = result.get("domain")
    if status not in DOMAIN_MEANINGS:
        return []
    value = _code(f"domain-{status}", DOMAIN_MEANINGS[status])
    return [hsr.CodeContentItem(_code("domain", "Validated domain"), value, "CONTAINS")]


def _algorithm(algo: Algorithm) -> list:
    import highdicom.sr as hsr

    rows = [
        (_code("111001", "Algorithm Name", "DCM"), algo.name),
        (_code("111003", "Algorithm Version", "DCM"), algo.version),
        (_code("bundle-id", "Bundle ID"), algo.bundle_id),
        (_code("bundle-sha256", "Bundle SHA-256"), algo.bundle_sha256),
        (_code("runtime", "Runtime"), algo.runtime),
    ]
    return [hsr.TextContentItem(name, value, "CONTAINS") for name, value in rows]


def read_sr_result(sr: Dataset) -> dict:
    """Finding(s), probabilities, threshold and bundle id back out of an SR (for checks and tests)."""
    out: dict = {"findings": [], "probabilities": {}, "text": {}}
    for item in sr.ContentSequence:
        name = item.ConceptNameCodeSequence[0]
        if item.ValueType == "CODE" and name.CodeValue == "121071" and "ContentSequence" in item:
            _read_label_finding(item, out)
        elif item.ValueType == "CODE" and name.CodeValue == "121071":
            out["findings"].append(item.ConceptCodeSequence[0].CodeValue)
        elif item.ValueType == "CODE" and name.CodeValue == "domain":
            out["domain"] = item.ConceptCodeSequence[0].CodeValue.removeprefix("domain-")
        elif item.ValueType == "NUM":
            value = float(item.MeasuredValueSequence[0].NumericValue)
            if name.CodeValue == "threshold":
                out["threshold"] = value
            elif name.CodeMeaning.startswith("Operating threshold of "):
                label = name.CodeMeaning.removeprefix("Operating threshold of ")
                out.setdefault("thresholds", {})[label] = value
            else:
                out["probabilities"][name.CodeMeaning.removeprefix("Probability of ")] = value
        elif item.ValueType == "TEXT":
            out["text"][name.CodeMeaning] = item.TextValue
        elif item.ValueType == "IMAGE":
            out["source_uid"] = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        elif item.ValueType == "UIDREF" and name.CodeValue == "121012":
            out["device_uid"] = item.UID
    return out


def _read_label_finding(item: Dataset, out: dict) -> None:
    """One multi-label finding: the label, its presence, probability and threshold."""
    label = item.ConceptCodeSequence[0].CodeMeaning
    out.setdefault("labels", []).append(label)
    for child in item.ContentSequence:
        meaning = child.ConceptNameCodeSequence[0].CodeMeaning
        if child.ValueType == "CODE" and child.ConceptCodeSequence[0].CodeValue == PRESENT[0]:
            out["findings"].append(label)
        elif child.ValueType == "NUM" and meaning.startswith("Operating threshold of "):
            out.setdefault("thresholds", {})[label] = float(
                child.MeasuredValueSequence[0].NumericValue
            )
        elif child.ValueType == "NUM":
            out["probabilities"][label] = float(child.MeasuredValueSequence[0].NumericValue)
