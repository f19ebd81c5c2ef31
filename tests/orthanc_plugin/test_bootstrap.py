"""The bootstrap Orthanc loads ships inside the package: a wheel carries it, and the CLI says where it is."""

from __future__ import annotations

import zipfile
from pathlib import Path

from support.orthanc import ROUTER_SCRIPT, SHUTDOWN_LUA
from support.wheel import BOOTSTRAP_IN_PACKAGE, bootstrap_path, build_wheel, install_wheel


def test_a_wheel_carries_the_bootstrap_the_shutdown_hook_and_the_pages(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (BOOTSTRAP_IN_PACKAGE / "orthanc_bootstrap.py", BOOTSTRAP_IN_PACKAGE / "shutdown.lua",
                   Path("bodypart_router/orthanc_plugin/explorer.js"),
                   Path("bodypart_router/orthanc_plugin/status_page/status.html"),
                   Path("bodypart_router/orthanc_plugin/resource_page/resource.html"),
                   Path("bodypart_router/imaging/codecs/jpeg2000.py")):
        assert needed.as_posix() in names, needed

    site = tmp_path / "site"
    install_wheel(wheel, site)
    script, lua = bootstrap_path(site), bootstrap_path(site, "--lua")
    assert script == site / BOOTSTRAP_IN_PACKAGE / "orthanc_bootstrap.py"
    assert lua == site / BOOTSTRAP_IN_PACKAGE / "shutdown.lua"
    assert script.read_bytes() == ROUTER_SCRIPT.read_bytes() and lua.read_bytes() == SHUTDOWN_LUA.read_bytes()


def test_the_checkout_answers_its_own_bootstrap() -> None:
    from bodypart_router import cli

    assert cli.BOOTSTRAP_SCRIPT == ROUTER_SCRIPT and cli.SHUTDOWN_LUA == SHUTDOWN_LUA
    assert ROUTER_SCRIPT.is_file() and SHUTDOWN_LUA.is_file()
    # nothing but the bootstrap and its Lua hook in the folder Orthanc puts first on sys.path
    assert sorted(p.name for p in ROUTER_SCRIPT.parent.iterdir() if p.name != "__pycache__") == \
        ["orthanc_bootstrap.py", "shutdown.lua"]
