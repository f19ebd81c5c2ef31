"""Take the documentation screenshots: Orthanc Explorer showing the class, and the status page.

Starts a router Orthanc (Debian's 1.10 on the host) with the shipped model and one peer,
stores a few X-rays, starts a slow backfill so the page has progress to show, then
photographs the pages with headless Chromium and writes small PNGs to docs/screenshots/.
Then a bad day: the peer stops, new X-rays pile up and some become dead letters (status page
with the destination down); the peer comes back, the router notices by itself, the dead
letters are resubmitted (status page after recovery).

    .venv/bin/python scripts/screenshots.py [DICOM files or folders ...]
    .venv/bin/python scripts/screenshots.py --runtime trixie   # Orthanc 1.12.7 (build/trixie-root)

With ``--runtime trixie`` it photographs, on Orthanc 1.12, the page that Orthanc Explorer 2's
buttons open (one study's result) and Orthanc Explorer's study page with its labels, into
``*-1.12.png``.

Without arguments it sends the X-rays in tests/fixtures. Everything it starts is
stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugin"), str(REPO / "tests")]

import requests  # noqa: E402
from PIL import Image  # noqa: E402

from bodypart_router.inference.classifier import file_sha256  # noqa: E402
from support.orthanc import OrthancProcess, get_runtime, peer_config, router_config  # noqa: E402

OUT = REPO / "docs" / "screenshots"
MODEL = REPO / "models" / "bodypart_router.onnx"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars"]


def default_inputs() -> list[Path]:
    """The small real X-rays committed as test fixtures."""
    return sorted((REPO / "tests" / "fixtures").glob("*.dcm"))


def dicom_files(args: list[str]) -> list[Path]:
    files: list[Path] = []
    for arg in args:
        path = Path(arg)
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return files


def shoot(url: str, out: Path, size: str, profile: Path) -> None:
    """One screenshot, then shrink it to a small palette PNG."""
    raw = out.with_suffix(".raw.png")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                    "--virtual-time-budget=6000", f"--screenshot={raw}", url],
                   check=True, capture_output=True, timeout=120)
    Image.open(raw).convert("RGB").quantize(colors=64).save(out, optimize=True)
    raw.unlink()
    print(f"{out.relative_to(REPO)}: {out.stat().st_size // 1024} KiB")


def _copies(files: list[Path], n: int) -> list[bytes]:
    """``n`` new instances (fresh UIDs) made from the X-rays, so that each is forwarded again."""
    import pydicom
    from pydicom.uid import generate_uid

    out = []
    for i in range(n):
        ds = pydicom.dcmread(files[i % len(files)], force=True)
        ds.SOPInstanceUID = generate_uid()
        if "file_meta" in dir(ds) and ds.file_meta is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = __import__("io").BytesIO()
        ds.save_as(buf)
        out.append(buf.getvalue())
    return out


def bad_day(router: OrthancProcess, peer: OrthancProcess, files: list[Path], profile: Path) -> None:
    """The status page with the destination down, then after it came back."""
    def dest() -> dict:
        return router.get_json("/bodypart-router/status")["Metrics"]["Destinations"]["ai-chest"]

    peer.stop()
    routed = [f for f in files if f.suffix == ".dcm"]
    first = [router.upload(b) for b in _copies(routed, 6)]
    router.wait_for(lambda: dest()["Circuit"] == "open" and dest()["DeadLetters"] >= 2, timeout=180,
                    what="the destination down with dead letters")
    for b in _copies(routed, 4):  # more arrive while it is down: they wait
        router.upload(b)
    time.sleep(8)
    print(f"destination down: {first and dest()}")
    shoot(f"{router.url}/bodypart-router/status.html", OUT / "status-destination-down.png", "1280,1250", profile)
    peer.start()
    router.wait_for(lambda: dest()["Circuit"] == "closed", timeout=120, what="the circuit closed by itself")
    router.post_json("/bodypart-router/failed/resubmit", {})
    router.wait_for(lambda: dest()["DeadLetters"] == 0 and dest()["Pending"] == 0, timeout=120, what="all sent")
    time.sleep(6)
    print(f"recovered: {dest()}")
    shoot(f"{router.url}/bodypart-router/status.html", OUT / "status-recovered.png", "1280,1250", profile)


def disabled(runtime: object, model: Path, profile: Path) -> None:
    """The status page of a router that a configuration with two mistakes keeps disabled."""
    config = router_config(runtime, model=model, routes={"spine": ["ai-genral"]},  # type: ignore[arg-type]
                           modalities={"ai-general": ("AI_GENERAL", "127.0.0.1", 104)},
                           router={"ModelSha256": file_sha256(model), "MinimumScor": 0.6})
    broken = OrthancProcess(config, runtime=runtime, name="shot-disabled")  # type: ignore[arg-type]
    try:
        broken.start()
        time.sleep(6)  # the metrics publisher runs once
        shoot(f"{broken.url}/bodypart-router/status.html", OUT / "status-disabled.png", "1280,520", profile)
    finally:
        broken.cleanup()


def orthanc_112(files: list[Path], model: Path) -> None:
    """One study's result page (what Orthanc Explorer 2's buttons open) and Explorer's labels, on 1.12."""
    importlib.import_module("support.trixie")  # registers the runtime

    runtime = get_runtime("trixie")
    if reason := runtime.unavailable():
        raise SystemExit(f"Orthanc 1.12 runtime unavailable: {reason}")
    peer = OrthancProcess(peer_config("ai-chest"), name="shot112-ai-chest")
    router: OrthancProcess | None = None
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    try:
        peer.start()
        config = router_config(runtime, model=model, routes={"adult_chest": ["ai-chest"], "spine": ["ai-chest"]},
                               peers={"ai-chest": peer, "ai-down": "http://127.0.0.1:9/"},
                               router={"ModelSha256": file_sha256(model)})
        config["BodyPartRouter"]["Routes"]["others"] = ["ai-down"]
        router = OrthancProcess(config, runtime=runtime, name="shot112-router").start()
        # one study holding every fixture, so that its page shows several classes
        study_uid = "1.2.826.0.1.3680043.10.543.1"
        import io

        import pydicom

        ids = []
        for f in files:
            ds = pydicom.dcmread(f, force=True)
            ds.StudyInstanceUID = study_uid
            buf = io.BytesIO()
            ds.save_as(buf)
            try:
                ids.append(router.upload(buf.getvalue()))
            except requests.HTTPError:
                continue
        router.wait_for(lambda: all(router.metadata(i).get("BodyPartState") not in (None, "queued", "processing")
                                    for i in ids), timeout=180, what="instances classified")
        time.sleep(5)
        study = router.get_json(f"/instances/{ids[0]}/study")["ID"]
        print("labels:", router.get_json(f"/studies/{study}/labels"), "version:", router.get_json("/system")["Version"])
        shoot(f"{router.url}/bodypart-router/resource.html?level=studies&id={study}", OUT / "resource-page-1.12.png",
              "1100,520", profile)
        shoot(f"{router.url}/app/explorer.html#study?uuid={study}", OUT / "explorer-study-1.12.png", "1100,700", profile)
    finally:
        if router is not None:
            router.cleanup()
        peer.cleanup()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="DICOM files or folders (default: tests/fixtures/*.dcm)")
    parser.add_argument("--model", type=Path, default=MODEL, help=f"ONNX model (default: {MODEL.relative_to(REPO)})")
    parser.add_argument("--runtime", choices=("host", "trixie"), default="host")
    args = parser.parse_args()
    files = dicom_files(args.inputs) if args.inputs else default_inputs()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.runtime == "trixie":
        orthanc_112(files, args.model)
        return
    runtime = get_runtime("host")
    sha256 = file_sha256(args.model)  # named in the config: any model may be photographed
    peer = OrthancProcess(peer_config("ai-chest"), name="shot-ai-chest")
    router: OrthancProcess | None = None
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    try:
        peer.start()
        config = router_config(runtime, model=args.model, routes={"adult_chest": ["ai-chest"], "spine": ["ai-chest"]},
                               peers={"ai-chest": peer},
                               router={"ModelSha256": sha256, "CircuitBreaker": {"FailureThreshold": 2},
                                       "Retry": {"MaxAttempts": 3, "BackoffSeconds": 1, "MaxBackoffSeconds": 4}})
        router = OrthancProcess(config, runtime=runtime, name="shot-router").start()
        ids = []
        for f in files:
            try:
                ids.append(router.upload(f))
            except requests.HTTPError as exc:  # not DICOM, or a file Orthanc itself refuses
                print(f"skipped {f.name}: {exc.response.status_code}")
        router.wait_for(lambda: all(router.metadata(i).get("BodyPartState") not in (None, "queued", "processing")
                                    for i in ids), timeout=120, what="instances classified")
        time.sleep(6)  # let the metrics publisher run once
        # A slow backfill, photographed half-way so the page shows its progress, rate and ETA.
        router.post_json("/bodypart-router/backfill", {"RatePerSecond": 1})
        router.wait_for(lambda: (router.get_json("/bodypart-router/backfill") or {}).get("Done", 0) >= 4,
                        timeout=60, what="backfill under way")
        shoot(f"{router.url}/bodypart-router/status.html", OUT / "status-page.png", "1280,1100", profile)
        classified = [i for i in ids if router.metadata(i).get("BodyPart")]
        shoot(f"{router.url}/app/explorer.html#instance?uuid={classified[0]}", OUT / "explorer-instance.png",
              "1100,700", profile)
        study = router.get_json(f"/instances/{classified[0]}/study")["ID"]
        shoot(f"{router.url}/app/explorer.html#study?uuid={study}", OUT / "explorer-study.png", "1100,700", profile)
        shoot(f"{router.url}/app/explorer.html", OUT / "explorer-home.png", "1100,420", profile)
        router.request("DELETE", "/bodypart-router/backfill")
        bad_day(router, peer, files, profile)
        disabled(runtime, args.model, profile)
    finally:
        if router is not None:
            router.cleanup()
        peer.cleanup()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
