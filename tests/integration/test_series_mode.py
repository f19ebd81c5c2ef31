"""``DecisionLevel: series`` in a real Orthanc: a two-view series is forwarded together.

The router routes adult_chest to one DICOM SCP and spine to another. The tiny test model gives
an adult chest gray level > 0.99 and the UNCERTAIN gray about 0.5 (abdominal versus adult
chest), which alone ends ``uncertain`` and goes nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydicom.uid import generate_uid
from support import dicoms
from support.dicom_net import CountingSCP
from support.orthanc import OrthancProcess, Runtime, router_config, wait_router_started
from support.tiny_model import UNCERTAIN_GRAY, gray_for

pytestmark = pytest.mark.integration


@dataclass
class SeriesSetup:
    router: OrthancProcess
    chest: CountingSCP
    spine: CountingSCP


@pytest.fixture(scope="module")
def series_setup(runtime: Runtime, test_model: tuple) -> Iterator[SeriesSetup]:
    model, sha256 = test_model
    chest = CountingSCP("AI_CHEST").start()
    spine = CountingSCP("AI_SPINE").start()
    router: OrthancProcess | None = None
    try:
        config = router_config(
            runtime, model=model, routes={"adult_chest": ["ai-chest"], "spine": ["ai-spine"]},
            modalities={"ai-chest": chest.modality, "ai-spine": spine.modality},
            router={"ModelSha256": sha256, "DecisionLevel": "series", "MinimumScore": 0.6,
                    "SeriesConfidentScore": 0.9},
        )
        router = OrthancProcess(config, runtime=runtime, name="router-series", args=["--verbose"])
        router.start()
        wait_router_started(router, timeout=20)
        yield SeriesSetup(router, chest, spine)
    finally:
        if router is not None:
            router.cleanup()
        chest.stop()
        spine.stop()


def _wait(router: OrthancProcess, instance: str, state: str) -> dict:
    router.wait_for(lambda: router.metadata(instance).get("BodyPartState") == state, timeout=40,
                    what=f"instance {instance} in state {state} (now {router.metadata(instance).get('BodyPartState')})")
    return router.metadata(instance)


def test_a_two_view_series_is_forwarded_together(series_setup: SeriesSetup) -> None:
    s = series_setup
    study, series = generate_uid(), generate_uid()
    frontal = dicoms.xray(gray_for("adult_chest"), study_uid=study, series_uid=series)
    lateral = dicoms.xray(UNCERTAIN_GRAY, study_uid=study, series_uid=series)
    lateral.InstanceNumber = 2
    ids = [s.router.upload(dicoms.to_bytes(ds)) for ds in (frontal, lateral)]
    for instance in ids:
        meta = _wait(s.router, instance, "forwarded")
        assert (meta["BodyPart"], meta["BodyPartForwarded"]) == ("adult_chest", "ai-chest")
    assert s.chest.count(frontal.SOPInstanceUID) == 1 and s.chest.count(lateral.SOPInstanceUID) == 1
    record = s.router.get_json(f"/bodypart-router/instances/{ids[1]}")
    assert record["Class"] == "adult_chest"


def test_the_unsure_film_alone_goes_nowhere(series_setup: SeriesSetup) -> None:
    s = series_setup
    alone = dicoms.xray(UNCERTAIN_GRAY)
    instance = s.router.upload(dicoms.to_bytes(alone))
    meta = _wait(s.router, instance, "classified")
    assert meta["BodyPart"] == "uncertain" and "BodyPartForwarded" not in meta
    assert s.chest.count(alone.SOPInstanceUID) == 0


def test_a_confident_disagreeing_film_keeps_its_own_class(series_setup: SeriesSetup) -> None:
    s = series_setup
    study, series = generate_uid(), generate_uid()
    chests = [dicoms.xray(gray_for("adult_chest"), study_uid=study, series_uid=series) for _ in range(2)]
    stray = dicoms.xray(gray_for("spine"), study_uid=study, series_uid=series)
    ids = [s.router.upload(dicoms.to_bytes(ds)) for ds in (*chests, stray)]
    assert _wait(s.router, ids[2], "forwarded")["BodyPartForwarded"] == "ai-spine"
    for instance in ids[:2]:
        assert _wait(s.router, instance, "forwarded")["BodyPartForwarded"] == "ai-chest"
    assert s.spine.count(stray.SOPInstanceUID) == 1 and s.chest.count(stray.SOPInstanceUID) == 0


def test_films_waiting_for_their_series_at_a_restart_are_routed_after_it(series_setup: SeriesSetup) -> None:
    s = series_setup
    s.router.stop()
    s.router.config["StableAge"] = 3600  # the series never becomes stable while this Orthanc runs
    try:
        s.router.start()
        wait_router_started(s.router, timeout=20)
        study, series = generate_uid(), generate_uid()
        films = [dicoms.xray(gray_for("adult_chest"), study_uid=study, series_uid=series),
                 dicoms.xray(UNCERTAIN_GRAY, study_uid=study, series_uid=series)]
        ids = [s.router.upload(dicoms.to_bytes(ds)) for ds in films]
        for instance in ids:
            _wait(s.router, instance, "awaiting-series")
        assert all(s.chest.count(ds.SOPInstanceUID) == 0 for ds in films)
        s.router.stop()
        s.router.start()  # Orthanc forgets unstable series when it restarts: the router decides them at start
        wait_router_started(s.router, timeout=20)
        for instance in ids:
            assert _wait(s.router, instance, "forwarded")["BodyPartForwarded"] == "ai-chest"
        assert all(s.chest.count(ds.SOPInstanceUID) == 1 for ds in films)
    finally:
        s.router.config["StableAge"] = 1
        if s.router.running():
            s.router.stop()
        s.router.start()
        wait_router_started(s.router, timeout=20)
