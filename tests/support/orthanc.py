"""Start real Orthanc processes for integration tests, benchmarks, fault scenarios and the demo.

Interface (stable; other runtimes plug in here)::

    from support.orthanc import OrthancProcess, router_config, peer_config, get_runtime

    rt = get_runtime("host")                 # or "trixie"; rt.unavailable() -> reason or None
    peer = OrthancProcess(peer_config("ai-chest"), runtime=rt, name="ai-chest").start()
    router = OrthancProcess(
        router_config(rt, model=Path("models/x.onnx"), routes={"adult_chest": ["ai-chest"]},
                      peers={"ai-chest": peer}, modalities={}, router={"MinimumScore": 0.5}),
        runtime=rt, name="router").start()
    router.upload(dicom_bytes)               # -> Orthanc instance ID
    router.get_json("/system"); router.put("/instances/x/metadata/Foo", "v")
    router.wait_for(lambda: ..., timeout=20, what="metadata set")
    router.stop()                            # graceful (SIGTERM); returns seconds it took
    router.kill()                            # SIGKILL, for crash tests; start() again reuses storage

``OrthancProcess(config, *, runtime="host"|"trixie"|Runtime, name, workdir=None, args=None)``
    ``config`` is a plain dict (the Orthanc JSON). Ports: ``HttpPort`` / ``DicomPort`` left out
    are filled with free ports; ``StorageDirectory`` left out is ``<workdir>/storage``.
    Attributes: ``url``, ``http_port``, ``dicom_port``, ``aet``, ``workdir``, ``config_path``,
    ``log_path``, ``pid``. ``log_text()`` returns the whole log. ``start()`` waits until
    ``GET /system`` answers (and raises with the log tail if the process dies first).
    Always call ``stop()`` (fixtures do it in ``finally``); ``stop()`` escalates to SIGKILL.

``Runtime`` (one small class per way of launching Orthanc) holds every host-specific bit:
    - ``name``; ``unavailable()`` -> ``None`` or a reason to skip;
    - ``command(config_path, args)`` -> argv that starts Orthanc with that config file and the
      extra Orthanc options ``args`` (e.g. ``["--verbose"]``);
    - ``plugins`` -> plugin paths as the Orthanc process sees them (python + gdcm);
    - ``python_environment`` -> the venv whose site-packages the router adds (its Python
      minor version must match the one embedded by the runtime's orthanc-python);
    - ``path(host_path)`` -> how the Orthanc process sees a host path (identity on the host;
      a bind-mount/chroot runtime translates it);
    - ``env`` -> extra environment variables for the process.
    ``HostRuntime`` uses Debian 12's /usr/sbin/Orthanc 1.10.1. Another runtime (for example a
    Debian 13 root with Orthanc 1.12) subclasses ``Runtime`` and is added to ``RUNTIMES``.

``wait_router_started(proc)`` waits for the router plugin itself (its status route).

Related helpers: :mod:`support.router_setup` (the router plus one receiver per destination
kind), :mod:`support.dicom_net` (C-STORE sender, counting SCP), :mod:`support.tiny_model`
(a model whose class the test chooses), :mod:`support.dicoms` (synthetic instances).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP_DIR = REPO / "plugin/bodypart_router/orthanc_plugin/bootstrap"
ROUTER_SCRIPT = BOOTSTRAP_DIR / "orthanc_bootstrap.py"
SHUTDOWN_LUA = BOOTSTRAP_DIR / "shutdown.lua"


def _session() -> requests.Session:
    """A keep-alive session whose GETs survive Orthanc closing an idle connection.

    civetweb closes a kept-alive connection after ``KeepAliveTimeout`` (1 s by default); a GET
    sent on it at that moment fails with ``RemoteDisconnected`` and is simply sent again.
    """
    session = requests.Session()
    retry = Retry(total=1, connect=1, read=1, status=0, other=0, backoff_factor=0,
                  allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


class PortTaken(RuntimeError):
    """Orthanc exited because its HTTP or DICOM port was already in use."""


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runtime:
    """How to launch an Orthanc binary; subclass it for another OS root or version."""

    name = "abstract"
    plugins: list[str] = []
    python_environment: str = ""
    env: dict[str, str] = {}

    def unavailable(self) -> str | None:
        """``None`` when this runtime can start Orthanc here, else the reason (used to skip)."""
        raise NotImplementedError

    def command(self, config_path: Path, args: Sequence[str] = ()) -> list[str]:
        """argv starting Orthanc with ``config_path``; ``args`` are extra Orthanc options (``--verbose``)."""
        raise NotImplementedError

    def path(self, host_path: Path | str) -> str:
        """The path under which the Orthanc process sees ``host_path``."""
        return str(host_path)


class HostRuntime(Runtime):
    """Debian 12's packaged Orthanc 1.10.1 with orthanc-python 4.0 (Python 3.11) and orthanc-gdcm."""

    name = "host"
    binary = "/usr/sbin/Orthanc"
    plugin_dir = Path("/usr/share/orthanc/plugins")

    def __init__(self) -> None:
        self.plugins = [str(self.plugin_dir / "libOrthancPython.so"), str(self.plugin_dir / "libOrthancGdcm.so")]
        # The test interpreter's own venv holds numpy, onnxruntime, pydicom... for Python 3.11.
        self.python_environment = sys.prefix
        self.env = {}

    def unavailable(self) -> str | None:
        if not Path(self.binary).exists():
            return f"{self.binary} is not installed (apt-get install orthanc orthanc-python orthanc-gdcm)"
        if not Path(self.plugins[0]).exists():
            return f"{self.plugins[0]} is missing (apt-get install orthanc-python)"
        return None

    def command(self, config_path: Path, args: Sequence[str] = ()) -> list[str]:
        return [self.binary, *args, str(config_path)]


#: Runtimes by name; other modules may add theirs (``RUNTIMES["trixie"] = TrixieRuntime``).
RUNTIMES: dict[str, Callable[[], Runtime]] = {"host": HostRuntime}


def get_runtime(runtime: str | Runtime = "host") -> Runtime:
    if isinstance(runtime, Runtime):
        return runtime
    if runtime not in RUNTIMES:
        raise KeyError(f"unknown Orthanc runtime {runtime!r} (known: {', '.join(sorted(RUNTIMES))})")
    return RUNTIMES[runtime]()


def peer_config(aet: str) -> dict[str, Any]:
    """A plain Orthanc without plugins, playing an AI server that receives instances."""
    return {
        "Name": aet,
        "DicomAet": aet.upper().replace("-", "_")[:16],
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "StableAge": 1,
    }


def _peer_target(dest: OrthancProcess | str) -> str:
    return dest.url if isinstance(dest, OrthancProcess) else str(dest)


def router_config(
    runtime: Runtime,
    *,
    model: Path,
    routes: Mapping[str, list[str]],
    peers: Mapping[str, OrthancProcess | str] | None = None,
    modalities: Mapping[str, OrthancProcess | tuple[str, str, int]] | None = None,
    router: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An Orthanc config running the router plugin.

    ``peers`` maps an OrthancPeers name to a running :class:`OrthancProcess` (or a URL);
    ``modalities`` maps a DicomModalities name to a running process (reached by C-STORE)
    or an ``(aet, host, port)`` tuple. ``router`` overrides keys of the ``BodyPartRouter``
    section; ``extra`` overrides top-level keys.
    """
    mods: dict[str, list[Any]] = {}
    for name, target in (modalities or {}).items():
        if isinstance(target, OrthancProcess):
            mods[name] = [target.aet, "127.0.0.1", target.dicom_port]
        else:
            mods[name] = list(target)
    section: dict[str, Any] = {
        "Enabled": True,
        "ModelPath": runtime.path(model),
        "PythonEnvironment": runtime.python_environment,
        "Routes": {k: list(v) for k, v in routes.items()},
        "MinimumScore": 0.5,
        "Workers": 1,
        "Retry": {"MaxAttempts": 4, "BackoffSeconds": 0.5, "MaxBackoffSeconds": 2},
        "ChangesPollSeconds": 0.5,
    }
    section.update(router or {})
    config: dict[str, Any] = {
        "Name": "bodypart-router",
        "DicomAet": "BODYPART_ROUTER",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": False,
        "Plugins": list(runtime.plugins),
        "PythonScript": runtime.path(ROUTER_SCRIPT),
        "LuaScripts": [runtime.path(SHUTDOWN_LUA)],
        "PythonVerbose": False,
        "UserMetadata": {
            "BodyPart": 1024,
            "BodyPartScore": 1025,
            "BodyPartModel": 1026,
            "BodyPartState": 1027,
            "BodyPartForwarded": 1028,
            "BodyPartHeaderAudit": 1029,
            "BodyPartClaim": 1030,
            "BodyPartSource": 1040,
            "BodyPartRegion": 1031,
            "BodyPartView": 1032,
            "BodyPartRotation": 1033,
            "BodyPartInverted": 1034,
        },
        "OrthancPeers": {k: {"Url": _peer_target(v)} for k, v in (peers or {}).items()},
        "DicomModalities": mods,
        "BodyPartRouter": section,
        "StableAge": 1,
        "JobsHistorySize": 100,
        # as in orthanc-config/orthanc.json: a reloaded job would resend behind the router's back
        "SaveJobs": False,
    }
    config.update(extra or {})
    return config


class OrthancProcess:
    """One real Orthanc process with its own config, storage, ports and log file."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        runtime: str | Runtime = "host",
        name: str = "orthanc",
        workdir: Path | None = None,
        args: list[str] | None = None,
        config_path: Path | None = None,
    ) -> None:
        """``config_path`` runs an existing configuration file or directory (e.g. a copy of
        Debian's /etc/orthanc) instead of writing ``config``, which must then hold its ports."""
        self.runtime = get_runtime(runtime)
        self.name = name
        self.args = list(args or [])  # extra Orthanc options, e.g. ["--verbose"]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"orthanc-{name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        #: Ports this object chose (it may choose again if another process took one meanwhile).
        self._own_ports = [k for k in ("HttpPort", "DicomPort") if k not in self.config]
        self.config.setdefault("HttpPort", free_port())
        self.config.setdefault("DicomPort", free_port())
        self.config.setdefault("DicomAet", name.upper().replace("-", "_")[:16])
        self.config.setdefault("StorageDirectory", self.runtime.path(self.workdir / "storage"))
        self._external_config = config_path is not None
        self.config_path = config_path or self.workdir / "config.json"
        self.log_path = self.workdir / "orthanc.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.session = _session()

    # -- identity -------------------------------------------------------------------------
    @property
    def http_port(self) -> int:
        return int(self.config["HttpPort"])

    @property
    def dicom_port(self) -> int:
        return int(self.config["DicomPort"])

    @property
    def aet(self) -> str:
        return str(self.config["DicomAet"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> OrthancProcess:
        """Write the config, launch Orthanc, wait until its REST API answers.

        A port found free by :func:`free_port` can be taken by another process (a client's
        ephemeral port) before Orthanc binds it; ports this object chose are then chosen again.
        """
        for _ in range(2):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if not self._own_ports:
                    raise
                for key in self._own_ports:
                    self.config[key] = free_port()
        return self._start_once(timeout)

    def _start_once(self, timeout: float) -> OrthancProcess:
        if not self._external_config:
            self.config_path.write_text(json.dumps(self.config, indent=2))
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.runtime.env}
        self._proc = subprocess.Popen(
            self.runtime.command(self.config_path, self.args),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,  # our own process group: stop() can signal all of it
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                if b"privileged or already in use" in self.log_path.read_bytes()[log_start:]:
                    raise PortTaken(f"Orthanc {self.name}: a port was taken before it could bind it:\n{tail}")
                raise RuntimeError(f"Orthanc {self.name} exited with {self._proc.returncode}:\n{tail}")
            try:
                if self.session.get(self.url + "/system", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"Orthanc {self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> float:
        """Graceful stop (SIGTERM). Returns the seconds it took; SIGKILLs after ``timeout``."""
        if not self._proc:
            return 0.0
        t0 = time.monotonic()
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
        self._proc = None
        return elapsed

    def kill(self) -> None:
        """SIGKILL, as a crash would. The storage stays; ``start()`` again resumes it."""
        if self._proc and self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def pause(self) -> None:
        """SIGSTOP (Orthanc and its children): it answers nothing until :meth:`resume`."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop and delete the work directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> OrthancProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- logs -----------------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- REST -----------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kwargs)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        r = self.request("GET", path, **kwargs)
        r.raise_for_status()
        return r.json()

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", {"Content-Type": "application/json"})
        r = self.request("POST", path, data=json.dumps(body) if body is not None else b"", **kwargs)
        r.raise_for_status()
        return r.json() if r.content else None

    def put(self, path: str, data: bytes | str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, data=data, **kwargs)

    def upload(self, dicom: bytes | Path) -> str:
        """Store one DICOM file by REST; returns its Orthanc instance ID."""
        data = dicom.read_bytes() if isinstance(dicom, Path) else dicom
        r = self.request("POST", "/instances", data=data, headers={"Content-Type": "application/dicom"})
        r.raise_for_status()
        return str(r.json()["ID"])

    def metadata(self, instance_id: str) -> dict[str, str]:
        """All metadata of an instance (``?expand`` works on Orthanc 1.10 and later)."""
        r = self.request("GET", f"/instances/{instance_id}/metadata?expand")
        return r.json() if r.ok else {}

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc ID of the instance with this SOP Instance UID, or None if not stored."""
        r = self.request("POST", "/tools/lookup", data=sop_instance_uid)
        found = [x["ID"] for x in (r.json() if r.ok else []) if x.get("Type") == "Instance"]
        return found[0] if found else None

    def instances(self) -> list[str]:
        return list(self.get_json("/instances"))

    def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition",
                 interval: float = 0.2) -> Any:
        """Poll ``predicate`` until it returns something truthy; raise with the log tail on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what} not reached within {timeout:.0f} s\n{self.log_tail()}")
            if not self.running():
                raise RuntimeError(f"{self.name} died while waiting for {what}:\n{self.log_tail()}")
            time.sleep(interval)


def wait_router_started(proc: OrthancProcess, *, timeout: float = 60.0, require_enabled: bool = True) -> dict[str, Any]:
    """Wait until the router's status route says it runs (``OrthancVersion`` is known once Orthanc
    has started) or that it disabled itself; returns that status.

    With ``require_enabled`` a disabled router raises at once with its ``Error``, instead of
    every later wait timing out.
    """

    def settled() -> dict[str, Any] | None:
        r = proc.request("GET", "/bodypart-router/status", timeout=5)
        if not r.ok:
            return None
        status = r.json()
        return status if not status.get("Enabled") or status.get("OrthancVersion") not in (None, "0") else None

    status = proc.wait_for(settled, timeout=timeout, what="router started")
    if require_enabled and not status.get("Enabled"):
        raise RuntimeError(f"{proc.name}: the router is disabled: {status.get('Error')}")
    return status
