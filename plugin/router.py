"""Entry point of the bodypart-router Orthanc plugin (the file Orthanc's ``PythonScript`` names).

Orthanc's Python plugin embeds the system Python, which does not see the router's packages
(numpy, onnxruntime, pydicom...). This script therefore

1. adds the site-packages of ``BodyPartRouter.PythonEnvironment`` (a virtual environment
   made for the same Python minor version as the one Orthanc embeds),
2. puts this directory first on ``sys.path`` so the ``bodypart_router`` package next to
   this file is the one that runs,
3. hands over to :func:`bodypart_router.orthanc_plugin.install`.

Nothing here calls Orthanc's REST API: it is unavailable while scripts load.
Relative paths are resolved against the directory of the Orthanc configuration file.
"""

from __future__ import annotations

import json
import site
import sys
from pathlib import Path

import orthanc  # type: ignore[import-not-found]

PLUGIN_DIR = Path(__file__).resolve().parent


def _configuration_directory() -> Path:
    """Directory of the Orthanc configuration: relative paths in the ``BodyPartRouter`` section start there."""
    try:
        path = Path(orthanc.GetConfigurationPath())
    except Exception:
        return Path.cwd()
    return path if path.is_dir() else path.parent


def _add_python_environment(config_dir: Path) -> bool:
    """Make the configured venv importable; False (after logging why) when it is unusable."""
    config = json.loads(orthanc.GetConfiguration())
    section = config.get("BodyPartRouter") or {}
    env = section.get("PythonEnvironment") if isinstance(section, dict) else None
    if not env:
        return True  # packages installed system-wide (e.g. a container image)
    root = Path(env).expanduser()
    if not root.is_absolute():
        root = (config_dir / root).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = root / "lib" / version / "site-packages"
    if not site_packages.is_dir():
        found = sorted(p.name for p in (root / "lib").glob("python*")) if (root / "lib").is_dir() else []
        orthanc.LogError(
            f"BodyPartRouter: BodyPartRouter.PythonEnvironment: {site_packages} does not exist; Orthanc embeds "
            f"{version}, so create the environment with that version (found: {', '.join(found) or 'nothing'}), "
            "e.g. `make setup`. The router is disabled."
        )
        return False
    before = list(sys.path)
    site.addsitedir(str(site_packages))  # also runs its .pth files (editable installs)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before  # the venv wins over Debian's dist-packages
    return True


CONFIG_DIR = _configuration_directory()
if _add_python_environment(CONFIG_DIR):
    sys.path.insert(0, str(PLUGIN_DIR))
    try:
        from bodypart_router.orthanc_plugin import install

        install(CONFIG_DIR)
    except Exception as exc:  # an import error must not take Orthanc down
        import traceback

        orthanc.LogError(f"BodyPartRouter: failed to load, the router is disabled: {exc!r}")
        orthanc.LogError(traceback.format_exc())
