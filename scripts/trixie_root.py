#!/usr/bin/env python3
"""Build the Debian 13 (trixie) root in which the integration tests run Orthanc 1.12.

Why: Debian 12 packages Orthanc 1.10, which has no labels. Debian 13 packages Orthanc 1.12
with orthanc-python embedding Python 3.13. A debootstrapped Debian 13 root runs both on a
Debian 12 machine without containers; the host reaches it over the shared loopback.

    python3 scripts/trixie_root.py            # build or refresh (a no-op when up to date)
    python3 scripts/trixie_root.py --check    # exit 0 if up to date, else print why and exit 1
    python3 scripts/trixie_root.py --force    # rebuild from scratch

Layout (all under build/, which git ignores):

    build/trixie-root/                         the root (debootstrap --variant=minbase)
    build/trixie-root/opt/bodypart-router/venv Python venv with the project's runtime
                                               dependencies, for the embedded Python 3.13
    build/trixie-cache/debs/                   debootstrap's package cache
    build/trixie-cache/wheels-cp3XX/           wheels downloaded on the host

Each layer is rebuilt only when what it was built from changed: the root when PACKAGES
changes, the venv when [project].dependencies in pyproject.toml changes. Stamps recording
that live in build/trixie-root/.bodypart-router/.

The Debian mirror is the one the host's apt already uses (read from /etc/apt), so the root
is built from the same place as the host; BODYPART_TRIXIE_MIRROR overrides it. Wheels are
downloaded by the host's pip: pip inside the root has no CA setup of its own and is only
used offline (--no-index).

Everything that needs mounts (debootstrap, venv creation, launching Orthanc) runs in a
private mount namespace (`unshare --mount`): its mounts exist only while its processes
live, so nothing is left mounted on the host, even after a crash or SIGKILL.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
ROOT = BUILD / "trixie-root"
CACHE = BUILD / "trixie-cache"
SUITE = "trixie"

#: Debian 13 packages installed in the root. orthanc-gdcm decodes what DCMTK cannot;
#: docker-compose provides the `docker compose` plugin that the packaging test uses to
#: validate docker-compose.yml (Debian 12 only packages the old Python docker-compose 1.x).
PACKAGES = (
    "orthanc",
    "orthanc-python",
    "orthanc-gdcm",
    "libre2-11",
    "python3-venv",
    "docker-compose",
)

#: Paths inside the root.
VENV = Path("/opt/bodypart-router/venv")
WHEELS_MOUNT = Path("/opt/bodypart-router/wheels")
ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
COMPOSE_PLUGIN = Path("/usr/libexec/docker/cli-plugins/docker-compose")

STAMPS = Path(".bodypart-router")
#: Modules that must import inside the root for the router to work (import names).
RUNTIME_IMPORTS = ("numpy", "pydicom", "pylibjpeg", "openjpeg", "gdcm", "cv2", "onnxruntime", "tqdm", "requests")

#: The environment of every process started in the root: nothing leaks in from the host
#: (a host PYTHONPATH or PIP_* setting would point the root's Python at the host's files).
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


def log(message: str) -> None:
    print(f"[trixie-root] {message}", flush=True)


# --------------------------------------------------------------------------------------
# Entering the root
# --------------------------------------------------------------------------------------

def enter_command(
    argv: Sequence[str],
    *,
    binds: Mapping[Path, Path] | Iterable[Path] = (),
    root: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The argv that runs ``argv`` chrooted in ``root`` inside a private mount namespace.

    ``binds`` maps host directories to paths inside the root (an iterable of host paths
    binds each at the same path). /proc and a fresh /dev/shm are mounted too. The command
    ends by exec'ing ``argv``, so the returned process *is* the program (same PID: signals
    reach it directly), and every mount disappears with it.
    """
    pairs = binds.items() if isinstance(binds, Mapping) else ((Path(b), Path(b)) for b in binds)
    lines = [
        "set -e",
        f"mount -t proc proc {shlex.quote(str(root / 'proc'))}",
        f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(str(root / 'dev/shm'))}",
    ]
    for host, inside in sorted(pairs, key=lambda p: str(p[1])):
        target = shlex.quote(str(root / Path(inside).relative_to("/")))
        lines.append(f"mkdir -p {target}")
        lines.append(f"mount --rbind {shlex.quote(str(host))} {target}")
    lines.append(f'exec chroot {shlex.quote(str(root))} "$@"')
    env_pairs = [f"{k}={v}" for k, v in {**CLEAN_ENV, **(env or {})}.items()]
    return ["env", "-i", *env_pairs, "unshare", "--mount", "--propagation", "private",
            "/bin/sh", "-c", "\n".join(lines), "enter-root", *argv]


def run_in_root(argv: Sequence[str], *, binds: Mapping[Path, Path] | Iterable[Path] = (),
                root: Path = ROOT) -> None:
    subprocess.run(enter_command(argv, binds=binds, root=root), check=True)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` visible to this process (should always be none)."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to follow a mount into the host's files."""
    if not path.exists():
        return
    if mounts := mounts_under(path):
        raise SystemExit(f"refusing to delete {path}: still mounted there: {', '.join(mounts)} (umount them first)")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


# --------------------------------------------------------------------------------------
# Inputs: the mirror, the package list, the Python requirements
# --------------------------------------------------------------------------------------

def _apt_sources(etc_apt: Path) -> Iterable[dict[str, list[str]]]:
    """Every source entry of the host's apt, as {"Types", "URIs", "Suites", "Components"}."""
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            # "deb [signed-by=...] URI SUITE COMPONENT..." (options dropped)
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 4:
                yield {"Types": [words[0]], "URIs": [words[1]], "Suites": [words[2]], "Components": words[3:]}
    for f in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        if not f.is_file():
            continue
        for paragraph in re.split(r"\n\s*\n", f.read_text()):
            fields: dict[str, list[str]] = {}
            for line in paragraph.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip()] = value.split()
            if fields.get("Enabled", ["yes"])[0].lower() != "no":
                yield fields


def host_mirror(etc_apt: Path = Path("/etc/apt"), os_release: Path = Path("/etc/os-release")) -> str:
    """The Debian mirror the host's apt uses for its own release's main component."""
    if override := os.environ.get("BODYPART_TRIXIE_MIRROR"):
        return override
    release = os_release.read_text() if os_release.is_file() else ""
    distro = re.search(r"^ID=\"?([a-z]+)", release, re.M)
    if not distro or distro.group(1) != "debian":
        raise SystemExit("this host's apt does not use a Debian mirror: set BODYPART_TRIXIE_MIRROR to one")
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", release, re.M)
    codename = m.group(1) if m else ""
    for src in _apt_sources(etc_apt):
        if ("deb" in src.get("Types", []) and codename in src.get("Suites", [])
                and "main" in src.get("Components", []) and src.get("URIs")):
            return src["URIs"][0]
    raise SystemExit(
        f"no Debian mirror for '{codename or 'this release'} main' found in {etc_apt}/sources.list*; "
        "set BODYPART_TRIXIE_MIRROR to a Debian mirror URL"
    )


def requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The project's runtime dependencies ([project].dependencies), as pip requirements."""
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def system_inputs() -> dict[str, object]:
    return {"suite": SUITE, "variant": "minbase", "packages": sorted(PACKAGES)}


def venv_inputs() -> dict[str, object]:
    return {"requirements": requirements(), "venv": str(VENV)}


def _stamp(root: Path, name: str) -> Path:
    return root / STAMPS / f"{name}.json"


def _stamp_matches(root: Path, name: str, inputs: dict[str, object]) -> bool:
    try:
        return json.loads(_stamp(root, name).read_text()).get("digest") == _digest(inputs)
    except (OSError, ValueError):
        return False


def _write_stamp(root: Path, name: str, inputs: dict[str, object], **facts: object) -> None:
    path = _stamp(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"digest": _digest(inputs), "inputs": inputs, **facts}, indent=2) + "\n")


def problem(root: Path = ROOT) -> str | None:
    """Why the root cannot run the tests as it is (missing or out of date), or None."""
    hint = "build it with `make trixie-root` (python3 scripts/trixie_root.py)"
    if not (root / ORTHANC.relative_to("/")).exists():
        return f"{root} has no Debian 13 Orthanc: {hint}"
    if not _stamp_matches(root, "system", system_inputs()):
        return f"{root} was built from another package list: {hint}"
    if not _stamp_matches(root, "venv", venv_inputs()):
        return f"the Python venv in {root} does not match pyproject.toml's dependencies: {hint}"
    return None


def python_version(root: Path = ROOT) -> str:
    """The root's Python minor version ("3.13"): the one orthanc-python embeds."""
    target = os.readlink(root / "usr/bin/python3")
    m = re.fullmatch(r"python(3\.\d+)", Path(target).name)
    if not m:
        raise SystemExit(f"cannot tell the Python version of {root}: usr/bin/python3 -> {target}")
    return m.group(1)


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------

def ensure_host_tools() -> None:
    if os.geteuid() != 0:
        raise SystemExit("building the Debian 13 root needs root (debootstrap, chroot, mount): run it as root")
    if shutil.which("debootstrap") is None:
        log("installing debootstrap")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, env=env)
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (apt-get install util-linux coreutils mount)")


def build_system(root: Path, mirror: str) -> None:
    """debootstrap a fresh root next to the old one, then swap it in."""
    staging = root.with_name(root.name + ".new")
    remove_tree(staging)
    (CACHE / "debs").mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} from {mirror} with {', '.join(PACKAGES)}")
    # In a private mount namespace: the /proc and /sys debootstrap mounts in the target
    # vanish with it even if it fails half-way.
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private",
         "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
         f"--cache-dir={CACHE / 'debs'}", SUITE, str(staging), mirror],
        check=True, stdout=subprocess.DEVNULL,
    )
    _write_stamp(staging, "system", system_inputs(), mirror=mirror)
    remove_tree(root)
    staging.rename(root)


def download_wheels(root: Path) -> Path:
    """Download the wheels of the runtime dependencies for the root's Python, on the host."""
    version = python_version(root)
    tag = "cp" + version.replace(".", "")
    wheels = CACHE / f"wheels-{tag}"
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"downloading {tag} wheels into {wheels}")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--dest", str(wheels), "--only-binary=:all:", "--python-version", version,
         "--implementation", "cp", "--abi", tag, *requirements()],
        check=True,
    )
    return wheels


def build_venv(root: Path) -> None:
    wheels = download_wheels(root)
    reqs = requirements()
    log(f"creating {VENV} in the root")
    remove_tree(root / VENV.relative_to("/"))
    pip = str(VENV / "bin/pip")
    run_in_root(["python3", "-m", "venv", str(VENV)], root=root)
    run_in_root([pip, "install", "--quiet", "--disable-pip-version-check", "--no-index",
                 "--find-links", str(WHEELS_MOUNT), *reqs],
                binds={wheels: WHEELS_MOUNT}, root=root)
    check = f"import {', '.join(RUNTIME_IMPORTS)}"
    run_in_root([str(VENV / "bin/python"), "-c", check], root=root)
    _write_stamp(root, "venv", venv_inputs(), wheels=sorted(p.name for p in wheels.glob("*.whl")))


def build(force: bool = False, root: Path = ROOT) -> None:
    ensure_host_tools()
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / "trixie-root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (parallel make/pytest)
        t0 = time.monotonic()
        if force or not _stamp_matches(root, "system", system_inputs()):
            build_system(root, host_mirror())
            log(f"system ready in {time.monotonic() - t0:.0f} s")
        else:
            log("system up to date")
        if force or not _stamp_matches(root, "venv", venv_inputs()):
            t1 = time.monotonic()
            build_venv(root)
            log(f"venv ready in {time.monotonic() - t1:.0f} s")
        else:
            log("venv up to date")
        if leaked := mounts_under(root):
            raise SystemExit(f"mounts left under {root}: {', '.join(leaked)}")
        log(f"{root} is ready ({time.monotonic() - t0:.0f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only tell whether the root is up to date")
    parser.add_argument("--force", action="store_true", help="rebuild the root and its venv from scratch")
    args = parser.parse_args(argv)
    if args.check:
        reason = problem()
        print(reason or f"{ROOT} is up to date")
        return 1 if reason else 0
    build(force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
