"""The facts a benchmark figure is meaningless without: CPU, cores, memory, library versions, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

#: Packages whose version changes the figures.
_PACKAGES = ("numpy", "pydicom", "pylibjpeg-openjpeg", "pyjpegls", "python-gdcm", "opencv-python-headless")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def orthanc_version(executable: str = "Orthanc") -> str | None:
    """``Orthanc --version``'s first line, or None when Orthanc is not installed."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = (out.stdout or out.stderr).strip().splitlines()
    return line[0] if line else None


def facts(provider: str | None = None) -> dict:
    """Machine description stored next to every results file.

    ``load_average`` is taken when the run starts: a busy machine (another job training a model)
    lowers every figure, and the results must say so.
    """
    import onnxruntime

    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "provider": provider,
        "packages": {p: _version(p) for p in _PACKAGES},
        "orthanc": orthanc_version(),
        "load_average_at_start": list(os.getloadavg()),
    }
