"""What only Orthanc 1.12 does, on Debian 13's Orthanc 1.12.7 in build/trixie-root.

test_router.py runs the whole routing flow on both runtimes; this module adds what 1.10
cannot show: labels on the study and series, found by label the way Orthanc Explorer 2
filters them. It also checks the Debian 13 runtime itself: the embedded Python 3.13 loads
the router's packages from the root's venv, and stopping or killing Orthanc there leaves
no process and no mount behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support import dicoms
from support.dicom_net import c_store
from support.orthanc import OrthancProcess, Runtime, get_runtime, peer_config
from support.router_setup import RouterSetup
from support.tiny_model import gray_for
from support.trixie import builder

pytestmark = [pytest.mark.integration, pytest.mark.trixie]


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    """Only the Debian 13 runtime here (overrides the conftest's host/trixie parametrisation)."""
    rt = get_runtime("trixie")
    if reason := rt.unavailable():
        pytest.skip(f"trixie runtime unavailable: {reason}")
    return rt


def _processes_in_root() -> list[int]:
    """PIDs whose root directory is the Debian 13 root (chrooted Orthancs still alive)."""
    root = str(builder.ROOT.resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(proc / "root").resolve() == Path(root):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _labels(router: OrthancProcess, level: str, resource: str) -> set[str]:
    return set(router.get_json(f"/{level}/{resource}/labels"))


def _wait_state(router: OrthancProcess, instance: str, state: str, timeout: float = 60) -> dict[str, str]:
    router.wait_for(lambda: router.metadata(instance).get("BodyPartState") == state, timeout=timeout,
                    what=f"instance {instance} in state {state}")
    return router.metadata(instance)


def test_it_is_orthanc_1_12(setup: RouterSetup) -> None:
    version = setup.router.get_json("/system")["Version"]
    assert tuple(int(x) for x in version.split(".")[:2]) >= (1, 12), version


def test_study_and_series_carry_the_label_of_each_class(setup: RouterSetup) -> None:
    """A chest series (sent by REST) and a spine series (by C-STORE) in one study."""
    router = setup.router
    study_uid = "1.2.826.0.1.3680043.8.498.112.1"
    chest = dicoms.xray(gray_for("adult_chest"), study_uid=study_uid)
    spine = dicoms.xray(gray_for("spine"), study_uid=study_uid)
    chest_id = router.upload(dicoms.to_bytes(chest))
    assert c_store([spine], router.dicom_port, called_aet=router.aet) == [0]
    spine_id = router.wait_for(lambda: router.find_instance(spine.SOPInstanceUID), what="spine stored")

    chest_meta = _wait_state(router, chest_id, "forwarded")
    spine_meta = _wait_state(router, spine_id, "forwarded")
    assert (chest_meta["BodyPart"], chest_meta["BodyPartForwarded"]) == ("adult_chest", "ai-chest")
    assert (spine_meta["BodyPart"], spine_meta["BodyPartForwarded"]) == ("spine", "ai-general")
    assert setup.chest.find_instance(chest.SOPInstanceUID) == chest_id
    assert setup.general.count(spine.SOPInstanceUID) == 1

    chest_series = router.get_json(f"/instances/{chest_id}")["ParentSeries"]
    spine_series = router.get_json(f"/instances/{spine_id}")["ParentSeries"]
    study = router.get_json(f"/series/{chest_series}")["ParentStudy"]
    assert _labels(router, "series", chest_series) == {"bodypart-adult-chest"}
    assert _labels(router, "series", spine_series) == {"bodypart-spine"}
    assert _labels(router, "studies", study) == {"bodypart-adult-chest", "bodypart-spine"}
    # What Orthanc Explorer 2's label filter asks:
    found = router.post_json("/tools/find", {"Level": "Series", "Query": {}, "Labels": ["bodypart-spine"]})
    assert spine_series in found and chest_series not in found


def test_dead_lettered_forward_labels_its_study(setup: RouterSetup) -> None:
    """abdominal goes to a peer where nothing listens: after its retries, a label says so."""
    router = setup.router
    instance = router.upload(dicoms.to_bytes(dicoms.xray(gray_for("abdominal"))))
    _wait_state(router, instance, "failed:dead-letter")
    series = router.get_json(f"/instances/{instance}")["ParentSeries"]
    study = router.get_json(f"/series/{series}")["ParentStudy"]
    assert _labels(router, "studies", study) == {"bodypart-abdominal", "bodypart-dead-letter"}
    found = router.post_json("/tools/find", {"Level": "Study", "Query": {}, "Labels": ["bodypart-dead-letter"]})
    assert study in found


def test_labelled_metrics_reach_orthanc_1_12s_exposition(setup: RouterSetup) -> None:
    """Orthanc 1.12 writes a plugin's metric name verbatim too, so the labels reach Prometheus."""
    router = setup.router

    def exposition() -> str:
        return router.request("GET", "/tools/metrics-prometheus").text

    router.wait_for(lambda: 'bodypart_router_circuit_state{destination="ai-down"}' in exposition(), timeout=30,
                    what="the router's labelled series")
    text = exposition()
    for series in ('bodypart_router_classified_total{class="adult_chest"} ', 'bodypart_router_enabled 1 ',
                   'bodypart_router_decode_seconds_bucket{le="+Inf"} ', "bodypart_router_queue_depth "):
        assert series in text, series


PROBE_SCRIPT = '''
"""Reports what Orthanc's embedded Python can import from the router's environment."""
import json, site, sys
import orthanc

config = json.loads(orthanc.GetConfiguration())
site.addsitedir(f"{config['ProbeEnvironment']}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")

def probe(output, uri, **request):
    import cv2, gdcm, numpy, onnxruntime, openjpeg, pydicom, pylibjpeg
    session = onnxruntime.InferenceSession(config["ProbeModel"], providers=["CPUExecutionProvider"])
    flat = numpy.full((1, 1, 224, 224), float(config["ProbeGray"]) / 255, dtype=numpy.float32)
    answer = {
        "Python": "%d.%d" % sys.version_info[:2],
        "Modules": {m.__name__: m.__file__ for m in (cv2, gdcm, numpy, onnxruntime, openjpeg, pydicom, pylibjpeg)},
        "Probabilities": session.run(None, {"image": flat})[0][0].tolist(),
    }
    output.AnswerBuffer(json.dumps(answer), "application/json")

orthanc.RegisterRestCallback("/probe", probe)
'''


def test_embedded_python_runs_the_model_with_the_roots_packages(
    runtime: Runtime, test_model: tuple[Path, str], tmp_path: Path
) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE_SCRIPT)
    config = peer_config("probe")
    config.update({
        "Plugins": runtime.plugins,
        "PythonScript": runtime.path(script),
        "ProbeEnvironment": runtime.python_environment,
        "ProbeModel": runtime.path(test_model[0]),
        "ProbeGray": gray_for("spine"),
    })
    with OrthancProcess(config, runtime=runtime, name="probe") as orthanc:
        answer = orthanc.get_json("/probe")
    assert answer["Python"] == builder.python_version()
    for module, path in answer["Modules"].items():
        assert path.startswith(runtime.python_environment + "/"), f"{module} came from {path}"
    probabilities = answer["Probabilities"]
    assert max(range(5), key=probabilities.__getitem__) == 3 and probabilities[3] > 0.99  # spine


@pytest.fixture
def plain_orthanc(runtime: Runtime) -> Iterator[OrthancProcess]:
    orthanc = OrthancProcess(peer_config("plain"), runtime=runtime, name="plain")
    try:
        yield orthanc.start()
    finally:
        orthanc.cleanup()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_nothing_is_left_running_or_mounted(plain_orthanc: OrthancProcess, how: str) -> None:
    """The chroot's mounts live in Orthanc's own mount namespace and end with it."""
    pid = plain_orthanc.pid
    others = set(_processes_in_root()) - {pid}  # the module's router and its peer
    assert pid in _processes_in_root()
    assert str(builder.ROOT / "proc") in Path(f"/proc/{pid}/mounts").read_text()
    assert not builder.mounts_under(builder.ROOT)  # never visible on the host
    getattr(plain_orthanc, how)()
    assert set(_processes_in_root()) <= others
    assert not builder.mounts_under(builder.ROOT)
