"""Header audit: does what the DICOM header says agree with what the pixels show?

Header body-part tags are wrong in a sizeable share of real images (copied protocols,
default values, a study description that covers several films). The router already knows
the body part from the pixels, so comparing the two is cheap and tells radiology IT which
sending stations (RemoteAET) label badly.

The header's region comes from the first of these tags that names a known region:

1. Body Part Examined (0018,0015) - a coded value, but often left at a modality default;
2. Series Description (0008,103E) and Protocol Name (0018,1030) - describe this acquisition;
3. Study Description (0008,1030) - the order, which may cover several regions.

Free text is matched against a small multilingual vocabulary (English, German, French,
Spanish, Italian, Portuguese, Dutch) after accents and punctuation are removed, so
``"Rx Tórax PA"``, ``"THORAX P.A."`` and ``"CXR"`` all mean chest, and ``"L-SPINE"``,
``"LWS"`` and ``"Columna lumbar"`` all mean spine. Spine phrases are matched first and
blanked out, because ``"thoracic spine"`` and ``"Brustwirbelsäule"`` are spine, not chest.

Adult versus pediatric chest uses Patient's Age (0010,1010) (``004Y``, ``018M``, ``010D``,
``006W``), or, when it is missing, Patient's Birth Date against the Study Date (the dates
are used for the arithmetic only and never logged or stored). The model's pediatric chest
class was learned from children aged 1 to 5, and adolescent chests look like adult ones, so:

* under :data:`PEDIATRIC_BELOW_YEARS` (10 years) the header expects ``pediatric_chest``;
* from :data:`ADULT_FROM_YEARS` (18 years, the usual pediatric-department limit) it
  expects ``adult_chest``;
* in between, or with no usable age, either chest class agrees. Flagging a 14-year-old's
  chest predicted as adult would be noise, not a header error.

The verdict is ``agree``, ``disagree`` or ``no-header`` (no tag names a known region). It
is stored in the instance metadata ``BodyPartHeaderAudit`` (config/schema.py) as ``agree:<classes>``,
``disagree:<classes>`` or ``no-header``, where ``<classes>`` are the classes the header
allows, joined by ``/`` (e.g. ``disagree:spine``, ``agree:adult_chest/pediatric_chest``).
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Mapping

from ..inference.classes import CLASS_NAMES

AGREE: Final = "agree"
DISAGREE: Final = "disagree"
NO_HEADER: Final = "no-header"
VERDICTS: Final[tuple[str, ...]] = (AGREE, DISAGREE, NO_HEADER)

#: Below this age (years) the header expects a pediatric chest.
PEDIATRIC_BELOW_YEARS: Final = 10.0
#: From this age (years) the header expects an adult chest.
ADULT_FROM_YEARS: Final = 18.0

#: Tags read for the region, in order of trust (DICOM keywords, as in Orthanc's simplified JSON).
REGION_TAGS: Final[tuple[str, ...]] = ("BodyPartExamined", "SeriesDescription", "ProtocolName", "StudyDescription")


class Region(str, Enum):
    """Anatomical regions a header can name; each maps to one or more model classes."""

    CHEST = "chest"
    ABDOMEN = "abdomen"
    SPINE = "spine"
    OTHER = "other"


_C, _A, _S, _O = Region.CHEST, Region.ABDOMEN, Region.SPINE, Region.OTHER

#: DICOM Body Part Examined defined terms (PS3.16 CID 4031) that free-text matching would
#: miss or split wrongly, checked on the whole value first.
_BODY_PART_TERMS: Final[dict[str, tuple[Region, ...]]] = {
    "CHESTABDOMEN": (_C, _A),
    "CHESTABDPELVIS": (_C, _A),
    "ABDOMENPELVIS": (_A, _O),
    "ABDPELVIS": (_A, _O),
    "CSPINE": (_S,), "TSPINE": (_S,), "LSPINE": (_S,), "SSPINE": (_S,), "TLSPINE": (_S,),
    "CTSPINE": (_S,), "LSSPINE": (_S,), "COCCYX": (_S,), "SACRUM": (_S,),
    "ABDOMEN": (_A,), "CHEST": (_C,), "THORAX": (_C,),
    "HEADNECK": (_O,), "NECK": (_O,), "EXTREMITY": (_O,), "UPRLIMB": (_O,), "LOWRLIMB": (_O,),
}

#: Free-text vocabulary, as (regex over the normalised text, regions). Normalised text is
#: upper case, accent-free, words separated by single spaces. Order matters: spine first,
#: and every match is blanked out before the next pattern is tried.
_VOCABULARY: Final[tuple[tuple[str, tuple[Region, ...]], ...]] = (
    # --- spine (before chest: "thoracic spine", "Brustwirbelsaeule", "columna dorsal")
    (r"[A-Z]*SPIN(E|AL)[A-Z]*", (_S,)),                # SPINE, L-SPINE, LSPINE, C SPINE, SPINAL
    (r"[A-Z]*WIRBEL[A-Z]*", (_S,)),                    # Wirbelsaeule, Lendenwirbel, BWS spelled out
    (r"\b(LWS|HWS|BWS|WS)\b", (_S,)),                  # German abbreviations
    (r"[A-Z]*SCOLIO[A-Z]*", (_S,)),                    # scoliosis, escoliosis
    (r"\bVERTEBR[A-Z]*", (_S,)),
    (r"\b(THORACO|TORACO|DORSO)?LUMB(AR|O|AL|ALE|ARE)[A-Z]*", (_S,)),  # lumbar, lumbosacral, thoracolumbar
    (r"\bLOMBA[A-Z]*", (_S,)),                         # lombaire, lombare
    (r"\b(CERVICAL|CERVICALE)\b", (_S,)),
    (r"\b(COLUMNA|COLUNA|COLONNE|COLONNA|RACHIS|RACHIDE|WERVELKOLOM)\b", (_S,)),
    (r"\b(SACRUM|SACRAL|COCCYX|STEISSBEIN|ODONTOID|DENS)\b", (_S,)),
    # --- chest
    (r"\b(CHEST|THORAX|THORAKS|TORAX|TORACE)[A-Z0-9]*", (_C,)),  # also CHEST2V, Thoraxaufnahme
    (r"\b(THX|CXR)\b", (_C,)),
    (
        r"\b(LUNG|LUNGS|LUNGE|LUNGEN|PULMON|PULMONAR|PULMONAIRE|POUMON|POUMONS|POLMONI|POLMONE|"
        r"PECHO|POITRINE|BORST|BORSTKAS|BRUSTKORB)\b",
        (_C,),
    ),
    (r"\b(RIB|RIBS|RIPPE|RIPPEN|COSTILLAS|COTES|COSTE|STERNUM|STERNO|ESTERNON)\b", (_C, _O)),
    (r"\bBABYGRAM\b", (_C, _A)),
    # --- abdomen
    (r"\bABD[A-Z]*", (_A,)),                           # ABD, ABDOMEN, ABDOMINAL, ABDOME, ABDOMEN UEBERSICHT
    (r"\bBAUCH[A-Z]*", (_A,)),                         # Bauch, Bauchuebersicht
    (r"\b(KUB|ASP|AXR|IVU|IVP|ADDOME|BUIK|BUIKOVERZICHT|BRZUCH|BOWEL|ILEUS)\b", (_A,)),
    (r"\bUROGRA[A-Z]*", (_A,)),
    # --- any other known region: the class "others"
    (
        r"\b(HANDS?|HANDGELENK|WRISTS?|FINGERS?|THUMB|ELBOWS?|FOREARM|HUMER(US|I)|ARMS?|SHOULDERS?|"
        r"CLAVICLE|CLAVICULA|SCAPULA|KNEES?|PATELLA|TIBIA|FIBULA|LEGS?|FEMUR|FEMORAL|ANKLES?|FOOT|FEET|"
        r"TOES?|CALCANEUS|CALCANEO|HEEL|HIPS?|PELVIS|PELVIC|SACROILIAC|SKULL|HEAD|FACIAL|SINUS|SINUSES|"
        r"MANDIBLE|JAW|NASAL|ORBITS?|DENTAL|TEETH|TOOTH|PANORAMIC|OPG|OPT|CEPH|CEPHALOMETRIC|CEPHALOGRAM|"
        r"EXTREMITY|EXTREMITIES|LIMB|LIMBS|MASTOID|ZYGOMA|TMJ|SCAPHOID|NAVICULAR|METACARPAL|METATARSAL|"
        r"PHALANX|PHALANGES|HALLUX|BONE ?AGE|"
        r"KNIE|FUSS|FUESSE|SCHULTER|BECKEN|HUEFTE|HUFTE|SCHAEDEL|SCHADEL|ELLENBOGEN|ELLBOGEN|UNTERARM|"
        r"OBERARM|OBERSCHENKEL|UNTERSCHENKEL|SPRUNGGELENK|ZEHE|ZEHEN|KIEFER|NNH|SCHLUESSELBEIN|"
        r"MANO|MANOS|MUNECA|RODILLA|PIE|PIES|TOBILLO|HOMBRO|CADERA|CRANEO|CODO|DEDO|ANTEBRAZO|BRAZO|PIERNA|"
        r"MAIN|POIGNET|GENOU|CHEVILLE|EPAULE|HANCHE|BASSIN|CRANE|COUDE|DOIGT|JAMBE|PIED|ORTEIL|"
        r"GINOCCHIO|CAVIGLIA|SPALLA|ANCA|BACINO|CRANIO|GOMITO|POLSO|PIEDE|"
        r"JOELHO|TORNOZELO|OMBRO|QUADRIL|BACIA|COTOVELO|PUNHO|"
        r"ENKEL|SCHOUDER|HEUP|BEKKEN|SCHEDEL|ELLEBOOG|VOET|POLS)\b",
        (_O,),
    ),
    (r"\b(HAND|KNIE|HUE?FT|SCHULTER|BECKEN|ELLE?N?BOGEN|SPRUNG|FINGER|ZEHE)[A-Z]+", (_O,)),  # German compounds
)
_COMPILED: Final = tuple((re.compile(p), regions) for p, regions in _VOCABULARY)
_NOT_WORD = re.compile(r"[^A-Z0-9]+")

_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])?\s*$")
_DAYS_PER_YEAR: Final = 365.25
_UNIT_YEARS: Final = {"D": 1 / _DAYS_PER_YEAR, "W": 7 / _DAYS_PER_YEAR, "M": 1 / 12, "Y": 1.0}


def normalise(text: str) -> str:
    """Upper case, accents removed (``Tórax`` -> ``TORAX``, ``ß`` -> ``SS``), words split on anything else."""
    decomposed = unicodedata.normalize("NFKD", text.replace("ß", "ss").replace("ẞ", "SS"))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    return " ".join(_NOT_WORD.split(plain)).strip()


def regions_in(text: str | None) -> tuple[Region, ...]:
    """Regions named in one free-text value, in :class:`Region` order; ``()`` when none is known."""
    if not text:
        return ()
    norm = normalise(text)
    if not norm:
        return ()
    found: set[Region] = set(_BODY_PART_TERMS.get(norm.replace(" ", ""), ()))
    if found:
        return tuple(r for r in Region if r in found)
    for pattern, regions in _COMPILED:
        if pattern.search(norm):
            found.update(regions)
            norm = pattern.sub(" ", norm)
    return tuple(r for r in Region if r in found)


def parse_age(value: str | None) -> float | None:
    """Patient's Age (0010,1010) in years: ``004Y`` -> 4, ``018M`` -> 1.5, ``010D`` -> 0.027.

    Lenient about what senders really write (``4Y``, ``45``, ``045 Y``); ``None`` when absent
    or absurd (over 150 years).
    """
    if not value:
        return None
    m = _AGE.match(value.upper())
    if not m:
        return None
    years = int(m.group(1)) * _UNIT_YEARS[m.group(2) or "Y"]
    return years if years <= 150 else None


def _parse_date(value: str | None) -> _dt.date | None:
    text = (value or "").strip().replace("-", "").replace(".", "")[:8]
    try:
        return _dt.datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 else None
    except ValueError:
        return None


def age_in_years(tags: Mapping[str, Any]) -> float | None:
    """Age from Patient's Age (0010,1010), else from Patient's Birth Date (0010,0030) and the study date."""
    age = parse_age(_text(tags.get("PatientAge")))
    if age is not None:
        return age
    birth = _parse_date(_text(tags.get("PatientBirthDate")))
    dates = (_parse_date(_text(tags.get(k))) for k in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"))
    when = next((d for d in dates if d), None)
    if birth is None or when is None or when < birth:
        return None
    return (when - birth).days / _DAYS_PER_YEAR


def chest_classes(age_years: float | None) -> tuple[str, ...]:
    """The chest classes a header allows for a patient of this age (see the module docstring)."""
    if age_years is not None and age_years < PEDIATRIC_BELOW_YEARS:
        return ("pediatric_chest",)
    if age_years is not None and age_years >= ADULT_FROM_YEARS:
        return ("adult_chest",)
    return ("adult_chest", "pediatric_chest")


_REGION_CLASSES: Final = {Region.ABDOMEN: ("abdominal",), Region.SPINE: ("spine",), Region.OTHER: ("others",)}


@dataclass(frozen=True)
class AuditResult:
    """The verdict for one instance, and the header evidence behind it."""

    verdict: str  # AGREE | DISAGREE | NO_HEADER
    header_classes: tuple[str, ...]  # classes the header allows, in CLASS_NAMES order; () for no-header
    source: str | None  # the DICOM keyword that named the region, e.g. "BodyPartExamined"
    age_years: float | None

    @property
    def metadata_value(self) -> str:
        """Value stored in ``BodyPartHeaderAudit``, e.g. ``disagree:spine`` or ``no-header``."""
        if self.verdict == NO_HEADER:
            return NO_HEADER
        return f"{self.verdict}:{'/'.join(self.header_classes)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "Verdict": self.verdict,
            "HeaderClasses": list(self.header_classes),
            "Source": self.source,
            "AgeYears": None if self.age_years is None else round(self.age_years, 2),
        }


def _text(value: Any) -> str | None:
    """Orthanc's JSON gives strings; multi-valued or nested values are flattened defensively."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, Mapping):  # Orthanc's "full" JSON: {"Value": ...}
        return _text(value.get("Value"))
    return str(value)


def header_classes(tags: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None, float | None]:
    """Classes the header allows, the tag that said so, and the patient's age in years."""
    age = age_in_years(tags)
    for keyword in REGION_TAGS:
        regions = regions_in(_text(tags.get(keyword)))
        if regions:
            allowed: set[str] = set()
            for region in regions:
                allowed.update(chest_classes(age) if region is Region.CHEST else _REGION_CLASSES[region])
            return tuple(c for c in CLASS_NAMES if c in allowed), keyword, age
    return (), None, age


def audit(predicted_class: str, tags: Mapping[str, Any]) -> AuditResult:
    """Compare the model's top class with the header.

    Args:
        predicted_class: the model's top class (one of ``CLASS_NAMES``), also when its score
            is below the routing minimum: the audit is about what the pixels show.
        tags: DICOM tags by keyword, as in Orthanc's ``/instances/{id}/simplified-tags``.
    """
    if predicted_class not in CLASS_NAMES:
        raise ValueError(f"predicted class {predicted_class!r} is not one of {', '.join(CLASS_NAMES)}")
    allowed, source, age = header_classes(tags)
    if not allowed:
        return AuditResult(NO_HEADER, (), None, age)
    verdict = AGREE if predicted_class in allowed else DISAGREE
    return AuditResult(verdict, allowed, source, age)


# --------------------------------------------------------------------------------------
# Aggregation per sending station
# --------------------------------------------------------------------------------------

#: Name used for instances that did not arrive over DICOM (REST uploads, plugins).
NO_AET: Final = "(none)"
#: Beyond this many stations, new ones are counted under :data:`OTHER_AETS`, so that a
#: misconfigured network cannot grow the metrics without bound.
MAX_STATIONS: Final = 256
OTHER_AETS: Final = "(other)"


class StationTally:
    """Verdict counts per sending station (RemoteAET). Thread-safe."""

    def __init__(self, max_stations: int = MAX_STATIONS) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._max = max_stations

    def record(self, remote_aet: str | None, verdict: str) -> None:
        if verdict not in VERDICTS:
            raise ValueError(f"unknown audit verdict {verdict!r} (expected one of {', '.join(VERDICTS)})")
        station = (remote_aet or "").strip() or NO_AET
        with self._lock:
            if station not in self._counts and len(self._counts) >= self._max:
                station = OTHER_AETS
            counts = self._counts.setdefault(station, dict.fromkeys(VERDICTS, 0))
            counts[verdict] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{aet: {"agree": n, "disagree": n, "no-header": n, "mismatch_rate": r | None}}``.

        The mismatch rate is ``disagree / (agree + disagree)``: instances without a usable
        header say nothing about the header's accuracy, so they are not in the denominator.
        """
        with self._lock:
            items: dict[str, dict[str, Any]] = {aet: dict(c) for aet, c in self._counts.items()}
        for counts in items.values():
            judged = counts[AGREE] + counts[DISAGREE]
            counts["mismatch_rate"] = counts[DISAGREE] / judged if judged else None
        return dict(sorted(items.items()))
