"""Targets of the secondary heads, derived from what each source is and from ``label_detail``.

Version 1 sources carry no region or view: each is one kind of film, as its README says
(AASCE: AP scoliosis films of the whole spine; the knee set: PA knee crops; ...). Version 2 rows
carry ``region=``, ``view=``, ``orient=`` in ``label_detail``. A target that cannot be told
with confidence is ``-1`` and masked out of that head's loss, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bodypart_router.inference.classes import CLASS_NAMES, REGION_NAMES, VIEW_NAMES

from .data import Sample

UNKNOWN = -1

#: Region of every image of a version 1 source (or of one of its classes).
SOURCE_REGION: dict[str, str] = {
    "aasce_spineweb16_scoliosis": "whole_spine",
    "roboflow_spine_region_cadma": "whole_spine",
    "lateral_spine_limsungjoo": "lumbar_spine",
    "hamedan_cephalograms": "skull",
    "isbi2015_cephalograms": "skull",
    "knee_oa_kl_clahe224": "thigh_knee_leg",
    "rsna_boneage_hands_1200": "hand_wrist",
    "mura_humerus_64px": "shoulder_arm",
    "periapical_gerarddd": "dental",
}

#: ``region=`` words of the manifest -> region. Words joined by ``+`` or ``/`` name several
#: parts; the row gets a region when all its parts map to the same one (``hand+wrist``).
REGION_WORDS: dict[str, str] = {
    "chest": "chest", "abdomen": "abdomen",
    "pelvis": "pelvis_hip", "hip": "pelvis_hip",
    "cervical_spine": "cervical_spine", "thoracic_spine": "thoracic_spine", "lumbar_spine": "lumbar_spine",
    "thoracolumbar": "lumbar_spine", "lumbar spine": "lumbar_spine",
    "skull": "skull", "sinus": "skull", "face": "skull", "dental": "dental",
    "shoulder": "shoulder_arm", "clavicle": "shoulder_arm", "humerus": "shoulder_arm",
    "elbow": "elbow_forearm", "forearm": "elbow_forearm",
    "hand": "hand_wrist", "wrist": "hand_wrist", "finger": "hand_wrist", "fingers": "hand_wrist",
    "thigh": "thigh_knee_leg", "knee": "thigh_knee_leg", "lower_leg": "thigh_knee_leg",
    "ankle": "ankle_foot", "foot": "ankle_foot",
}
#: Combinations that name one film of a larger region.
REGION_COMBINATIONS: dict[frozenset[str], str] = {
    frozenset({"hip", "thigh"}): "pelvis_hip",
    frozenset({"pelvis", "thigh"}): "pelvis_hip",
    frozenset({"cervical_spine", "thoracic_spine", "lumbar_spine"}): "whole_spine",
}

#: Sources whose films are all one projection.
SOURCE_VIEW: dict[str, str] = {
    "aasce_spineweb16_scoliosis": "frontal",
    "roboflow_spine_region_cadma": "frontal",
    "lateral_spine_limsungjoo": "lateral",
    "hamedan_cephalograms": "lateral",
    "isbi2015_cephalograms": "lateral",
    "kermany_pediatric_224": "frontal",
    "knee_oa_kl_clahe224": "frontal",
    "rsna_boneage_hands_1200": "frontal",
    "actualmed_covid_cxr": "frontal",
}
#: ``view=`` values -> projection; anything else (oblique, decubitus, two views) stays unknown.
VIEW_WORDS: dict[str, str] = {
    "frontal": "frontal", "ap": "frontal", "pa": "frontal", "ap supine": "frontal", "ap erect": "frontal",
    "pa_erect": "frontal", "ap_supine_or_erect": "frontal", "lateral": "lateral", "l": "lateral",
    "lateral_cephalogram": "lateral",
}

#: Sources whose films are not reliably stored upright (MURA exports: limbs at any angle;
#: periapical films: no upright convention): no rotation target, only the class and region.
NO_UPRIGHT_SOURCES = frozenset({"roboflow_upperlimb_fracture_mura_like", "mura_humerus_64px", "periapical_gerarddd"})


@dataclass(frozen=True)
class Targets:
    """Head targets of one image; ``UNKNOWN`` where the data does not say."""

    region: int
    view: int
    #: Whether the stored film is upright, so that a turned copy has a known rotation target.
    upright: bool


def detail(sample: Sample) -> dict[str, str]:
    """``label_detail`` as a dict (``key=value`` pairs separated by ``;``)."""
    return dict(kv.split("=", 1) for kv in sample.label_detail.split(";") if "=" in kv)


def region_of(sample: Sample) -> str | None:
    """The region of one image, or ``None`` when it cannot be told."""
    cls = sample.class_name
    if cls in ("adult_chest", "pediatric_chest"):
        return "chest"
    if cls == "abdominal":
        return "abdomen"
    if sample.source in SOURCE_REGION:
        return SOURCE_REGION[sample.source]
    d = detail(sample)
    if sample.source == "mednist_64px" and d.get("mednist_class") == "Hand":
        return "hand_wrist"
    words = d.get("region")
    if not words:
        return None
    parts = frozenset(w.strip() for w in words.replace("/", "+").split("+") if w.strip())
    if parts in REGION_COMBINATIONS:
        return REGION_COMBINATIONS[parts]
    regions = {REGION_WORDS.get(p) for p in parts}
    if len(regions) == 1 and None not in regions:
        region = regions.pop()
        # a class that disagrees with the region words is a data question, not a target
        if cls == "spine" and not region.endswith("spine"):
            return None
        return region
    return None


def view_of(sample: Sample) -> str | None:
    """``frontal`` / ``lateral``, or ``None`` when the data does not say."""
    if sample.source in SOURCE_VIEW:
        return SOURCE_VIEW[sample.source]
    d = detail(sample)
    if sample.source == "darkcovidnet_cxr":
        return "frontal" if d.get("origin", "").startswith("NIH") else None
    if sample.source == "mednist_64px" and d.get("mednist_class") == "CXR":
        return "frontal"  # NIH ChestX-ray14 films: all frontal
    if sample.source == "mednist_64px" and d.get("mednist_class") == "Hand":
        return "frontal"  # RSNA bone-age hands: PA
    return VIEW_WORDS.get(d.get("view", "").strip().lower())


def targets(sample: Sample) -> Targets:
    region = region_of(sample)
    view = view_of(sample)
    upright = sample.source not in NO_UPRIGHT_SOURCES and "orient=" not in sample.label_detail
    return Targets(region=REGION_NAMES.index(region) if region else UNKNOWN,
                   view=VIEW_NAMES.index(view) if view else UNKNOWN, upright=upright)


def age_group(sample: Sample) -> str | None:
    """``infant`` / ``child`` / ``adult`` where the manifest says so."""
    return detail(sample).get("age_group")


def fine_group(sample: Sample) -> str:
    """The group an image is reported under in the held-out tables: its region, else its class."""
    region = region_of(sample)
    if sample.class_name == "pediatric_chest":
        return f"chest ({age_group(sample) or 'child'})"
    if region == "chest":
        view = view_of(sample)
        return f"chest ({view or 'adult'})" if view == "lateral" else "chest (adult)"
    return region or CLASS_NAMES[sample.label]
