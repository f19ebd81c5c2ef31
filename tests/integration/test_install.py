"""Installing the router into an existing Orthanc, and a configuration copied elsewhere.

* Debian's service layout: a scratch copy of the ``orthanc`` package's /etc/orthanc (several
  files merged by Orthanc, PythonScript in python.json, LuaScripts and UserMetadata in
  orthanc.json) gets ``scripts/install.py``; Orthanc then starts from the directory, as
  ``orthanc.service`` does, with the router enabled, classifies an X-ray and stops in time.
* The shipped orthanc-config/orthanc.json copied to another directory: Orthanc still starts
  (its script and Lua hook are absolute paths that ``make setup`` installs); the router is
  disabled and says why.
* The package installed from its wheel: ``bodypart-router bootstrap-path`` names the bootstrap
  inside it, and Orthanc loads the router from that package.
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from support.orthanc import REPO, OrthancProcess, free_port, get_runtime, router_config, wait_router_started
from support.wheel import bootstrap_path, build_wheel, install_wheel

pytestmark = pytest.mark.integration

sys.path.insert(0, str(REPO / "scripts"))
import install  # noqa: E402

DEBIAN_CONFIG = Path("/etc/orthanc")
BOOTSTRAP = Path("/usr/local/share/bodypart-router")
FIXTURE = REPO / "tests" / "fixtures" / "chest_mono1.dcm"


@pytest.fixture(scope="module")
def host() -> None:
    reason = get_runtime("host").unavailable()
    if reason:
        pytest.skip(f"host Orthanc unavailable: {reason}")


def _site_settings(config_dir: Path, tmp_path: Path) -> tuple[int, int]:
    """What a site has already set in its orthanc.json; here: free ports and a scratch storage."""
    http, dicom = free_port(), free_port()
    main = config_dir / "orthanc.json"
    text = main.read_text()
    for key, value in (("HttpPort", http), ("DicomPort", dicom), ("StorageDirectory", str(tmp_path / "db")),
                       ("IndexDirectory", str(tmp_path / "db"))):
        text = install.set_value(text, key, value)
    main.write_text(text)
    return http, dicom


def test_install_into_debians_orthanc_service_layout(host: None, tmp_path: Path) -> None:
    if not (DEBIAN_CONFIG / "orthanc.json").exists() or not (DEBIAN_CONFIG / "python.json").exists():
        pytest.skip("Debian's orthanc and orthanc-python packages are not installed (/etc/orthanc)")
    config_dir = tmp_path / "etc" / "orthanc"
    shutil.copytree(DEBIAN_CONFIG, config_dir)
    http, dicom = _site_settings(config_dir, tmp_path)
    prefix = tmp_path / "opt" / "bodypart-router"
    venv = REPO / ".venv"  # the packages are those of the project's environment (no download here)
    assert install.main(["--prefix", str(prefix), "--orthanc-config", str(config_dir),
                         "--python-environment", str(venv)]) == 0
    once = {p.name: p.read_text() for p in config_dir.glob("*.json")}
    assert install.main(["--prefix", str(prefix), "--orthanc-config", str(config_dir),
                         "--python-environment", str(venv)]) == 0
    assert {p.name: p.read_text() for p in config_dir.glob("*.json")} == once  # a second run changes nothing
    assert (config_dir / "python.json.bak-bodypart-router").exists()

    orthanc = OrthancProcess({"HttpPort": http, "DicomPort": dicom}, name="debian-service",
                             config_path=config_dir)  # the whole directory, as orthanc.service runs it
    try:
        orthanc.start()
        status = wait_router_started(orthanc, timeout=60)
        assert status["Enabled"] is True, status
        instance = orthanc.upload(FIXTURE.read_bytes())
        def result() -> dict:  # the packed result, as the shipped configuration declares it
            return json.loads(orthanc.metadata(instance).get("BodyPartResult") or "{}")

        orthanc.wait_for(lambda: result().get("State") == "classified", timeout=90, what="the X-ray classified")
        assert orthanc.metadata(instance)["BodyPart"] == result()["Class"]
        log = orthanc.log_text()
        assert "LuaScripts does not list" not in log and "SaveJobs is true" not in log
        assert orthanc.stop() < 10  # the Lua hook lets the router stop its threads in time
    finally:
        orthanc.cleanup()


def test_a_copied_configuration_leaves_orthanc_running_with_the_router_disabled(host: None, tmp_path: Path) -> None:
    if not (BOOTSTRAP / "orthanc_bootstrap.py").exists() or not (BOOTSTRAP / "shutdown.lua").exists():
        pytest.skip(f"{BOOTSTRAP} is not installed: run `make setup`")
    elsewhere = tmp_path / "site-config"
    elsewhere.mkdir()
    text = (REPO / "orthanc-config" / "orthanc.json").read_text()
    http, dicom = free_port(), free_port()
    for key, value in (("HttpPort", http), ("DicomPort", dicom), ("StorageDirectory", str(tmp_path / "db")),
                       ("IndexDirectory", str(tmp_path / "db"))):
        text = install.set_value(text, key, value)
    (elsewhere / "orthanc.json").write_text(text)  # ModelPath and PythonEnvironment now point nowhere
    orthanc = OrthancProcess({"HttpPort": http, "DicomPort": dicom}, name="copied-config",
                             config_path=elsewhere / "orthanc.json")
    try:
        orthanc.start()  # Orthanc starts: the script and the Lua hook are absolute paths
        status = orthanc.get_json("/bodypart-router/status")
        assert status["Enabled"] is False
        assert any("PythonEnvironment" in e for e in status["Errors"]), status
        assert "router is disabled" in orthanc.log_text()
        assert orthanc.upload(FIXTURE.read_bytes())  # and it keeps storing
        assert orthanc.stop() < 10
    finally:
        orthanc.cleanup()


def test_the_bootstrap_of_an_installed_wheel_loads_the_package_around_it(host: None, tmp_path: Path) -> None:
    """The wheel installed where nothing else finds it: ``bootstrap-path`` names the script inside it, and
    Orthanc loads the router from that package alone (the environment holds only the dependencies)."""
    installed = tmp_path / "installed"
    install_wheel(build_wheel(tmp_path / "build"), installed)
    env = tmp_path / "env"
    site = env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    site.mkdir(parents=True)
    # the dependencies come from the project's environment, whose own .pth files (the editable
    # checkout among them) a path line does not run
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script, lua = bootstrap_path(installed), bootstrap_path(installed, "--lua")
    assert script.is_relative_to(installed) and lua.is_relative_to(installed)
    config = router_config(get_runtime("host"), model=REPO / "models" / "bodypart_router.onnx", routes={},
                           router={"PythonEnvironment": str(env)},
                           extra={"PythonScript": str(script), "LuaScripts": [str(lua)]})
    orthanc = OrthancProcess(config, name="wheel")
    try:
        orthanc.start()
        status = wait_router_started(orthanc, timeout=60)
        assert status["Enabled"] is True, status
        instance = orthanc.upload(FIXTURE.read_bytes())
        orthanc.wait_for(lambda: orthanc.metadata(instance).get("BodyPartState") == "classified", timeout=90,
                         what="the X-ray classified")
        assert orthanc.stop() < 10
    finally:
        orthanc.cleanup()
