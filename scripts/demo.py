"""`make demo [INPUT=path]`: the router end to end, on this machine, in about a minute.

Starts three real Orthanc processes:

* the router, with the shipped ``orthanc-config/orthanc.json`` (only ports, storage and
  the two destinations' addresses are changed, so the demo exercises the real config);
* ``ai-chest``, a demo AI server reached as an Orthanc peer over HTTP;
* ``ai-general``, a demo AI server reached as a DICOM modality by C-STORE.

It sends the sample X-rays (the committed ``tests/fixtures/*.dcm``) or INPUT's DICOM files
(a file or a folder, searched recursively) to the router by C-STORE, waits until each has
its final state, checks on the two AI servers where each one actually arrived, prints a
table and writes ``build/demo-report.json`` (a list of ``{file, sop_instance_uid, class,
score, source, state, forwarded_to}``; ``source`` is the ``BodyPartSource`` metadata: what
decided the class, ``pixels``, ``pixels+header``, ``header`` or ``conflict``). Everything it started is stopped at the end, also on
Ctrl-C or error. The exit status is 1 if any instance did not arrive exactly where its
class routes. ``--keep-running`` leaves the processes up (Ctrl-C to stop) to look at
Orthanc Explorer and the status page.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugin"), str(REPO / "tests")]

from bodypart_router.config import SECTION, load_orthanc_json  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.errors import InvalidDicomError  # noqa: E402
from support.dicom_net import c_store_files  # noqa: E402
from support.orthanc import OrthancProcess, free_port, get_runtime, peer_config, wait_router_started  # noqa: E402

CONFIG = REPO / "orthanc-config" / "orthanc.json"
REPORT = REPO / "build" / "demo-report.json"
WORKDIR = REPO / "build" / "demo"
DEFAULT_INPUT = REPO / "tests" / "fixtures"
#: Top-level and router keys holding paths, resolved against the config file's directory.
PATH_KEYS = ("PythonScript",)
LIST_PATH_KEYS = ("LuaScripts",)
ROUTER_PATH_KEYS = ("ModelPath", "PythonEnvironment", "StateDirectory")
FINAL_PREFIXES = ("forwarded", "classified", "held:", "skipped:", "failed:")  # "classified": final if routed nowhere


@dataclass
class Row:
    file: str
    sop_instance_uid: str
    instance_id: str | None = None
    class_name: str | None = None
    score: float | None = None
    source: str | None = None
    state: str | None = None
    forwarded_to: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    metadata_forwarded: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        """Arrived exactly where its class routes, and the BodyPartForwarded metadata says the same."""
        arrived = sorted(self.forwarded_to)
        stored = self.state is not None and self.state not in ("not-stored",)
        return stored and arrived == sorted(self.expected) and arrived == self.metadata_forwarded

    def report(self) -> dict[str, Any]:
        return {"file": self.file, "sop_instance_uid": self.sop_instance_uid, "class": self.class_name,
                "score": self.score, "source": self.source, "state": self.state, "forwarded_to": sorted(self.forwarded_to)}


def find_dicoms(path: Path) -> list[Path]:
    """DICOM files under ``path`` (by content: readable by pydicom and holding a SOP Instance UID)."""
    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found = []
    for p in candidates:
        try:
            ds = dcmread(p, stop_before_pixels=True, force=p.suffix.lower() == ".dcm")
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
            continue
        if "SOPInstanceUID" in ds:
            found.append(p)
    return found


def router_config(base: dict[str, Any], chest: OrthancProcess, general: OrthancProcess,
                  model: Path | None, model_sha256: str | None) -> dict[str, Any]:
    """The shipped config with absolute paths, free ports and the demo AI servers' addresses."""
    cfg = copy.deepcopy(base)
    here = CONFIG.parent
    for key in PATH_KEYS:
        if key in cfg:
            cfg[key] = str((here / cfg[key]).resolve())
    for key in LIST_PATH_KEYS:
        if key in cfg:
            cfg[key] = [str((here / p).resolve()) for p in cfg[key]]
    section = cfg[SECTION]
    for key in ROUTER_PATH_KEYS:
        if section.get(key):
            section[key] = str((here / section[key]).resolve())
    if model:
        section["ModelPath"] = str(model.resolve())
    if model_sha256:
        section["ModelSha256"] = model_sha256
    cfg["HttpPort"], cfg["DicomPort"] = free_port(), free_port()
    cfg.pop("StorageDirectory", None)
    cfg.pop("IndexDirectory", None)
    cfg["OrthancPeers"] = {"ai-chest": {"Url": chest.url}}
    cfg["DicomModalities"] = {"ai-general": [general.aet, "127.0.0.1", general.dicom_port]}
    return cfg


def expected_destinations(section: dict[str, Any], class_name: str | None) -> list[str]:
    if class_name is None:
        return []
    if class_name == "uncertain":
        names = section.get("UncertainRoutes", [])
    else:
        names = section.get("Routes", {}).get(class_name, [])
    return sorted(n.split(":", 1)[-1] for n in names)


def wait_final(router: OrthancProcess, rows: list[Row], section: dict[str, Any], timeout: float) -> None:
    """Poll each instance's metadata until its state is final: forwarded, skipped:, failed:, or
    classified for a class that routes nowhere."""
    deadline = time.monotonic() + timeout
    pending = list(rows)
    while pending and time.monotonic() < deadline:
        for row in list(pending):
            if row.instance_id is None:
                row.instance_id = router.find_instance(row.sop_instance_uid)
                if row.instance_id is None:
                    continue
            result = router_result(router.metadata(row.instance_id))
            state = result["State"]
            routed = bool(expected_destinations(section, result["Class"]))
            if state.startswith(FINAL_PREFIXES) and not (state == "classified" and routed):
                row.state = state
                row.class_name = result["Class"]
                row.score = float(result["Score"]) if result["Score"] is not None else None
                row.source = result["Source"]
                row.metadata_forwarded = sorted(result["Forwarded"])
                pending.remove(row)
        time.sleep(0.3)
    for row in pending:  # not final in time: report what is known
        row.state = router_result(router.metadata(row.instance_id))["State"] if row.instance_id else "not-stored"


def router_result(meta: dict[str, str]) -> dict[str, Any]:
    """The router's result from its packed ``BodyPartResult`` metadata, or else from the values
    written one each (the configuration decides which: see the README's metadata section)."""
    packed = json.loads(meta["BodyPartResult"]) if meta.get("BodyPartResult") else {}
    forwarded = packed.get("Forwarded")
    if forwarded is None:
        forwarded = [n for n in meta.get("BodyPartForwarded", "").split(",") if n]
    return {
        "Class": packed.get("Class", meta.get("BodyPart")),
        "Score": packed.get("Score", meta.get("BodyPartScore")),
        "Source": packed.get("Source", meta.get("BodyPartSource")),
        "State": packed.get("State", meta.get("BodyPartState", "")),
        "Forwarded": list(forwarded),
    }


def print_table(rows: list[Row]) -> None:
    header = ("file", "class", "score", "source", "state", "arrived at", "routes to", "ok")
    lines = [(r.file, r.class_name or "-", f"{r.score:.3f}" if r.score is not None else "-", r.source or "-",
              r.state or "-",
              ",".join(sorted(r.forwarded_to)) or "-", ",".join(r.expected) or "-", "yes" if r.ok else "NO")
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths)))
    for line in lines:
        print(fmt.format(*line))
    for r in rows:
        if r.note:
            print(f"note: {r.file}: {r.note}")


def _stop_on_termination() -> None:
    """SIGTERM (``kill``, or ``make demo`` stopped) ends the demo like Ctrl-C: the ``finally`` below
    stops every Orthanc it started (they run in their own sessions, so nothing else would). On
    Linux this process also gets SIGTERM when its parent (``make``) dies."""
    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="?", type=Path, default=DEFAULT_INPUT,
                        help="DICOM file or folder (default: the committed sample X-rays)")
    parser.add_argument("--model", type=Path, help="use this ONNX model instead of the shipped one")
    parser.add_argument("--model-sha256", help="accept this model hash (a model without a matching card)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the results")
    parser.add_argument("--keep-running", action="store_true", help="leave the servers up until Ctrl-C")
    args = parser.parse_args(argv)

    files = find_dicoms(args.input)
    if not files:
        print(f"no DICOM files found in {args.input}", file=sys.stderr)
        return 2
    runtime = get_runtime("host")
    reason = runtime.unavailable()
    if reason:
        print(f"cannot start Orthanc: {reason}", file=sys.stderr)
        return 2
    base = load_orthanc_json(CONFIG)
    shutil.rmtree(WORKDIR, ignore_errors=True)
    _stop_on_termination()
    procs: list[OrthancProcess] = []
    try:
        chest = OrthancProcess(peer_config("ai-chest"), name="ai-chest", workdir=WORKDIR / "ai-chest")
        procs.append(chest)
        general = OrthancProcess(peer_config("ai-general"), name="ai-general", workdir=WORKDIR / "ai-general")
        procs.append(general)
        chest.start()
        general.start()
        config = router_config(base, chest, general, args.model, args.model_sha256)
        router = OrthancProcess(config, runtime=runtime, name="router", workdir=WORKDIR / "router")
        procs.append(router)
        router.start()
        status = wait_router_started(router, require_enabled=False)
        if not status.get("Enabled"):
            print(f"the router is disabled: {status.get('Error')}\n(log: {router.log_path})", file=sys.stderr)
            return 2
        print(f"router      {router.url}  (Orthanc Explorer: {router.url}/app/explorer.html)")
        print(f"status page {router.url}/bodypart-router/status.html")
        print(f"ai-chest    {chest.url}   (Orthanc peer, HTTP)")
        print(f"ai-general  {general.url}   (DICOM modality {general.aet} on port {general.dicom_port})")
        print(f"model       {status['Model']['Version']}")
        print(f"sending {len(files)} file(s) by C-STORE to {router.aet}@127.0.0.1:{router.dicom_port} ...")

        rows = []
        sent = c_store_files(files, router.dicom_port, called_aet=router.aet)
        for path, (uid, st) in zip(files, sent, strict=True):
            row = Row(file=_display(path), sop_instance_uid=uid)
            if st != 0:  # e.g. no C-STORE answer: store it by REST so the file is still routed, and say so
                problem = "no answer" if st == -1 else f"status 0x{st:04X}"
                r = router.request("POST", "/instances", data=path.read_bytes())
                row.note = f"C-STORE failed ({problem}), " + ("sent by REST" if r.ok else "REST refused too")
                if not r.ok:
                    row.state = "not-stored"
            rows.append(row)
        t0 = time.monotonic()
        section = config[SECTION]
        wait_final(router, [r for r in rows if r.state is None], section, args.timeout)
        for row in rows:
            if row.state is None:
                row.state = "not-stored"
        for row in rows:
            row.expected = expected_destinations(section, row.class_name)
            for name, peer in (("ai-chest", chest), ("ai-general", general)):
                if peer.find_instance(row.sop_instance_uid):
                    row.forwarded_to.append(name)
        print(f"all results in {time.monotonic() - t0:.1f} s\n")
        print_table(rows)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps([r.report() for r in rows], indent=2) + "\n")
        bad = [r for r in rows if not r.ok]
        arrived = len(rows) - len(bad)
        print(f"\nreport: {REPORT.relative_to(REPO)}; {arrived}/{len(rows)} arrived where their class routes")
        truth = args.input / "truth.json" if args.input.is_dir() else None
        if truth is not None and truth.is_file():
            print(against_truth(rows, json.loads(truth.read_text()), section))
        if args.keep_running:
            print("servers are running; press Ctrl-C to stop them")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 1 if bad else 0
    finally:
        for p in reversed(procs):
            p.stop()


def against_truth(rows: list[Row], truth: dict[str, Any], section: dict[str, Any]) -> str:
    """With the ``truth.json`` that ``make bench-fusion ARGS="--dicom-out DIR"`` writes beside the
    files (``{file name: {"class": true class}}``): the share of routed instances that arrived
    where their *true* class routes, and the share that ended ``uncertain``."""
    known = [r for r in rows if Path(r.file).name in truth]
    routed = [r for r in known if r.forwarded_to]
    right = [r for r in routed
             if sorted(r.forwarded_to) == expected_destinations(section, truth[Path(r.file).name]["class"])]
    unsure = [r for r in known if r.class_name == "uncertain"]
    if not known:
        return "truth.json names none of these files"
    return (f"against truth.json: {len(right)}/{len(routed)} routed instances "
            f"({len(right) / max(1, len(routed)):.1%}) arrived where their true class routes; "
            f"{len(unsure)}/{len(known)} ({len(unsure) / len(known):.1%}) ended uncertain")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the end: the servers are stopped already
        sys.exit(130)
