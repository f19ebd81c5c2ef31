"""The router is invisible to what it does not route: Orthanc with it and without it, side by side.

Both Orthancs get the same configuration (the second without ``PythonScript`` and the
``BodyPartRouter`` section) and the same instances, by REST and by ``storescu`` like
orthanc-tests' ``test_incoming_storescu``: CR and DX X-rays (routed), CT, MR and SR (not).
The changes log (orthanc-tests' ``test_changes``) must be the same change for change, apart
from the metadata updates of the routed X-rays, and every non-routed instance must have the
same metadata (``test_metadata``), down to the list of names. ``MarkSkipped`` brings the
``BodyPartState`` of skipped instances back.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from support import dicoms
from support.dicom_net import CountingSCP
from support.orthanc import OrthancProcess, Runtime, router_config, wait_router_started
from support.tiny_model import gray_for

pytestmark = pytest.mark.integration

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
#: Metadata that differs between two stores of the same file whatever plugin runs.
TIME_DEPENDENT = {"ReceptionDate"}


def _mr() -> Dataset:
    ds = dicoms.ct()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MR_STORAGE
    ds.Modality = "MR"
    return ds


def _dx() -> Dataset:
    ds = dicoms.xray(gray_for("spine"), modality="DX")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX_STORAGE
    return ds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per kind, written once so that both Orthancs store the very same bytes."""
    folder = tmp_path_factory.mktemp("compat")
    kinds = {"cr": dicoms.xray(gray_for("spine")), "dx": _dx(), "ct": dicoms.ct(), "mr": _mr(), "sr": dicoms.sr(),
             "cr-cstore": dicoms.xray(gray_for("spine")), "ct-cstore": dicoms.ct(), "sr-cstore": dicoms.sr()}
    out = {}
    for name, ds in kinds.items():
        out[name] = folder / f"{name}.dcm"
        out[name].write_bytes(dicoms.to_bytes(ds))
    return out


ROUTED = {"cr", "dx", "cr-cstore"}


def _configs(runtime: Runtime, model: tuple[Path, str], scp: CountingSCP,
             router: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(with the router, without it): identical but for the router's script and section."""
    with_router = router_config(runtime, model=model[0], routes={"spine": ["ai-general"]},
                                modalities={"ai-general": scp.modality},
                                router={"ModelSha256": model[1], **(router or {})},
                                extra={"StableAge": 3600})  # no Stable* change while the test runs
    without = {k: v for k, v in with_router.items() if k not in ("PythonScript", "BodyPartRouter", "LuaScripts")}
    return with_router, without


def _store_all(proc: OrthancProcess, corpus: dict[str, Path]) -> dict[str, str]:
    """Store every file, in a fixed order, REST ones then C-STORE ones; returns {kind: Orthanc ID}."""
    ids = {}
    for name, path in corpus.items():
        if not name.endswith("-cstore"):
            ids[name] = proc.upload(path)
    cstore = [p for n, p in corpus.items() if n.endswith("-cstore")]
    subprocess.run(["storescu", "-aec", proc.aet, "127.0.0.1", str(proc.dicom_port), *map(str, cstore)],
                   check=True, capture_output=True, timeout=60)
    for name, path in corpus.items():
        if name.endswith("-cstore"):
            uid = dicoms_uid(path)
            ids[name] = proc.wait_for(lambda u=uid: proc.find_instance(u), what=f"{name} stored")
    return ids


def dicoms_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _changes(proc: OrthancProcess) -> list[tuple[str, str, str]]:
    answer = proc.get_json("/changes?since=0&limit=10000")
    assert answer["Done"]
    return [(c["ChangeType"], c["ResourceType"], c["ID"]) for c in answer["Changes"]]


def _instance_metadata(proc: OrthancProcess, instance_id: str) -> tuple[list[str], dict[str, str]]:
    names = sorted(proc.get_json(f"/instances/{instance_id}/metadata"))
    values = {k: v for k, v in proc.metadata(instance_id).items() if k not in TIME_DEPENDENT}
    return names, values


@pytest.fixture(scope="module")
def side_by_side(runtime: Runtime, test_model: tuple[Path, str],
                 corpus: dict[str, Path]) -> Iterator[tuple[OrthancProcess, OrthancProcess, dict[str, str]]]:
    scp = CountingSCP("AI_GENERAL").start()
    procs: list[OrthancProcess] = []
    try:
        with_cfg, without_cfg = _configs(runtime, test_model, scp)
        plain = OrthancProcess(without_cfg, runtime=runtime, name="plain")
        procs.append(plain)
        plain.start()
        router = OrthancProcess(with_cfg, runtime=runtime, name="router")
        procs.append(router)
        router.start()
        wait_router_started(router, timeout=30)
        plain_ids = _store_all(plain, corpus)
        ids = _store_all(router, corpus)
        assert ids == plain_ids  # Orthanc IDs derive from the UIDs
        for name, iid in ids.items():
            wanted = ("forwarded",) if name in ROUTED else ("skipped:",)
            router.wait_for(lambda i=iid, w=wanted: str(router.get_json(f"/bodypart-router/instances/{i}")["State"])
                            .startswith(w), what=f"{name} handled by the router", timeout=60)
        yield router, plain, ids
    finally:
        for p in reversed(procs):
            p.cleanup()
        scp.stop()


def test_changes_log_is_the_same_but_for_the_routed_results(side_by_side: Any) -> None:
    router, plain, ids = side_by_side
    routed = {ids[n] for n in ROUTED}
    with_router = [c for c in _changes(router) if not (c[0] == "UpdatedMetadata" and c[2] in routed)]
    assert with_router == _changes(plain)
    # and the routed X-rays did get their results
    assert {c[2] for c in _changes(router) if c[0] == "UpdatedMetadata"} == routed


def test_non_routed_instances_have_exactly_the_same_metadata(side_by_side: Any) -> None:
    router, plain, ids = side_by_side
    for name, iid in ids.items():
        if name in ROUTED:
            continue
        assert _instance_metadata(router, iid) == _instance_metadata(plain, iid), name
        record = router.get_json(f"/bodypart-router/instances/{iid}")
        assert record["State"].startswith("skipped:") and record["Detail"], name  # the reason is kept
    assert router.metadata(ids["ct"]).keys() == plain.metadata(ids["ct"]).keys()
    assert router.metadata(ids["cr"])["BodyPartState"] == "forwarded"


def test_mark_skipped_writes_the_state_of_skipped_instances(runtime: Runtime, test_model: tuple[Path, str],
                                                            corpus: dict[str, Path]) -> None:
    scp = CountingSCP("AI_GENERAL").start()
    config, _ = _configs(runtime, test_model, scp, router={"MarkSkipped": True})
    try:
        with OrthancProcess(config, runtime=runtime, name="router-marks") as router:
            wait_router_started(router, timeout=30)
            ct = router.upload(corpus["ct"])
            sr = router.upload(corpus["sr"])
            router.wait_for(lambda: router.metadata(ct).get("BodyPartState") == "skipped:non-projection-modality",
                            what="CT marked skipped")
            router.wait_for(lambda: router.metadata(sr).get("BodyPartState") == "skipped:non-image-sop-class",
                            what="SR marked skipped")
    finally:
        scp.stop()


def test_the_packed_result_costs_one_write_per_change(runtime: Runtime, test_model: tuple[Path, str],
                                                     corpus: dict[str, Path]) -> None:
    """With ``BodyPartResult`` declared (as in the shipped configuration) a routed X-ray gets its
    class alone (declared too) and everything else in one JSON value: three metadata writes in
    all, where the classic layout needs one per value and per change."""
    scp = CountingSCP("AI_GENERAL").start()
    config, _ = _configs(runtime, test_model, scp)
    config["UserMetadata"] = {"BodyPartResult": 1031, "BodyPart": 1024}
    try:
        with OrthancProcess(config, runtime=runtime, name="router-packed") as router:
            wait_router_started(router, timeout=30)
            cr = router.upload(corpus["cr"])
            router.wait_for(lambda: json.loads(router.metadata(cr).get("BodyPartResult", "{}")).get("State")
                            == "forwarded", what="CR forwarded")
            meta = router.metadata(cr)
            result = json.loads(meta["BodyPartResult"])
            assert result["Class"] == meta["BodyPart"] == "spine"
            assert result["Forwarded"] == ["ai-general"] and result["Model"].startswith("tiny-test-model@")
            assert {"Score", "Source", "HeaderAudit"} <= result.keys()
            assert not {"BodyPartState", "BodyPartScore", "BodyPartForwarded"} & meta.keys()
            writes = [c for c in _changes(router) if c[0] == "UpdatedMetadata" and c[2] == cr]
            assert len(writes) == 2, writes  # BodyPart when classified, BodyPartResult once forwarded
    finally:
        scp.stop()
