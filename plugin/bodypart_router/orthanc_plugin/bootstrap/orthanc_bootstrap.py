"""Bootstrap of the bodypart-router Orthanc plugin: the file Orthanc's ``PythonScript`` names.

Orthanc's Python plugin embeds the system Python, which does not see the router's packages
(numpy, onnxruntime, pydicom...). This script therefore

1. adds the site-packages of ``BodyPartRouter.PythonEnvironment`` (a virtual environment
   made for the same Python minor version as the one Orthanc embeds),
2. finds the ``bodypart_router`` package it belongs to and puts its parent first on
   ``sys.path``: the package next to this file (a copy beside a package, as the Docker image
   makes), else the package this file lies in (a checkout, ``make install``, a wheel: the
   file ships as ``bodypart_router/orthanc_plugin/bootstrap/orthanc_bootstrap.py``, and
   ``bodypart-router bootstrap-path`` prints where it is); otherwise the package comes from
   the environment (a copy at a fixed path, below),
3. hands over to :func:`bodypart_router.orthanc_plugin.install`.

It lives in a folder of its own, beside ``shutdown.lua`` (the ``LuaScripts`` hook) alone, because
Orthanc's Python plugin imports the script as a top-level module with its folder first on
``sys.path``: any other module there would shadow a top-level one of the same name.

The same file also serves at a fixed absolute path
(``/usr/local/share/bodypart-router/orthanc_bootstrap.py``, installed by ``make setup``): the
shipped configuration names that path, so the configuration can be copied anywhere and Orthanc
still starts. Orthanc's Python plugin refuses to start Orthanc when ``PythonScript`` does not
exist, but everything after that is the router's: whatever fails here (no environment, no
package, an import error) is logged, ``GET /bodypart-router/status`` answers why, and Orthanc
keeps serving.

Nothing here calls Orthanc's REST API: it is unavailable while scripts load.
Relative paths are resolved against the directory of the Orthanc configuration file.
"""

from __future__ import annotations

import json
import site
import sys
from pathlib import Path

import orthanc  # type: ignore[import-not-found]

BOOTSTRAP_DIR = Path(__file__).resolve().parent


def _package_parent() -> Path | None:
    """The folder holding the ``bodypart_router`` package this script goes with, if any.

    A package next to this file comes first; else the package this file lies in
    (``<parent>/bodypart_router/orthanc_plugin/bootstrap/``).
    """
    candidates = [BOOTSTRAP_DIR]
    if len(BOOTSTRAP_DIR.parents) > 2 and BOOTSTRAP_DIR.parents[1].name == "bodypart_router":
        candidates.append(BOOTSTRAP_DIR.parents[2])
    for candidate in candidates:
        if (candidate / "bodypart_router" / "__init__.py").is_file():
            return candidate
    return None


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


def _disabled(reason: str) -> None:
    """The package could not be loaded: log why, and answer it on the status route."""
    orthanc.LogError(f"BodyPartRouter: {reason}. The router is disabled; Orthanc keeps running.")
    body = json.dumps({"Enabled": False, "Error": reason, "Errors": [reason], "Loaded": False})

    def status(output, uri, **request):  # type: ignore[no-untyped-def]
        output.AnswerBuffer(body, "application/json")

    try:
        orthanc.RegisterRestCallback("/bodypart-router/status", status)
    except Exception:  # the log line above is the reason, whatever happens here
        pass


CONFIG_DIR = _configuration_directory()
if _add_python_environment(CONFIG_DIR):
    PACKAGE_PARENT = _package_parent()
    if PACKAGE_PARENT is not None:
        sys.path.insert(0, str(PACKAGE_PARENT))
    try:
        from bodypart_router.orthanc_plugin import install
    except ImportError as exc:
        import traceback

        orthanc.LogError(traceback.format_exc())
        _disabled(f"cannot import the bodypart_router package ({exc}); it is neither next to nor around {__file__}, nor in "
                   "BodyPartRouter.PythonEnvironment (relative paths start at the configuration's directory, "
                   f"{CONFIG_DIR})")
    else:
        try:
            install(CONFIG_DIR)
        except Exception as exc:  # an error while loading must not take Orthanc down
            import traceback

            orthanc.LogError(traceback.format_exc())
            _disabled(f"failed to load: {exc!r}")
else:
    _disabled("BodyPartRouter.PythonEnvironment is unusable (see the line above)")
