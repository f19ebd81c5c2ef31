"""Fault scenarios of the hardening work: a lost state database, a full disk, a classifier child
killed again and again, a flapping destination, decompression bombs, hostile and cross-site
requests. Same contract as :mod:`support.fault_scenarios` (one :class:`ScenarioResult` each,
``lost``/``duplicates`` counted at the receiving SCP, ``orthanc_alive`` by a fresh X-ray routed
at the end); registered in its ``SCENARIOS``.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable

import pydicom
import requests
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from support.fault_scenarios import (
    SCENARIO_INDEX_BASE, Context, RecordingSCP, ScenarioResult, Sizes, alive_probe, count, is_final, send_rest,
    settle, states, xray,
)
from support.malformed import to_bytes
from support.orthanc import OrthancProcess, wait_router_started

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: PHI marker indices of each scenario's X-rays (phi_markers keeps birth dates valid below 9072).
SCENARIO_INDEX_BASE.update({"state_db_lost": 8100, "disk_full": 8300, "child_killed_repeatedly": 8500,
                            "destination_flapping": 8700, "csrf_and_hostile_bodies": 8900})
#: Sizes of these scenarios: ``make faults`` (full) and the test suite (ci).
HARDENING_SIZES = {
    "full": {"state_db_lost": 200, "disk_full": 100, "child_killed": 200, "child_kills": 6, "flapping": 150,
             "flaps": 8},
    "ci": {"state_db_lost": 40, "disk_full": 30, "child_killed": 60, "child_kills": 4, "flapping": 40, "flaps": 4},
}
#: Mean seconds between two kills of the classifier child in ``child_killed_repeatedly``.
KILL_INTERVAL_SECONDS = 1.5
#: Memory bounds of ``decompression_bombs`` (peak resident memory, read from /proc/<pid>/status VmHWM).
CHILD_PEAK_LIMIT_MB = 700
ORTHANC_PEAK_LIMIT_MB = 1500


def _size(sizes: Sizes, key: str) -> int:
    return HARDENING_SIZES["ci" if sizes.peer_down_instances < 100 else "full"][key]


def _state_db(proc: OrthancProcess) -> Path:
    return Path(proc.config["BodyPartRouter"]["StateDirectory"]) / "state.sqlite"


def _wait_states(proc: OrthancProcess, ids: list[str], ok: Callable[[str], bool], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        now = states(proc, ids)
        if all(ok(s) for s in now.values()) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def _health(proc: OrthancProcess) -> str:
    try:
        return str(proc.get_json("/bodypart-router/status").get("Health"))
    except (requests.RequestException, ValueError) as exc:
        return f"(no status: {exc})"


# --------------------------------------------------------------------------- state_db_lost


def state_db_lost(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Work is pending (the destination is down) when Orthanc stops; the state database is then
    truncated to 0 bytes. Later, with more work pending, its middle pages are overwritten. After
    each restart every instance must arrive, once: the work list is rebuilt from the beginning
    of Orthanc's changes log, and what was already forwarded is not sent again."""
    result = ScenarioResult("state_db_lost")
    scp = RecordingSCP("AI_DEST")  # down: every forward stays owed
    ctx.scps.append(scp)
    router = ctx.router(scp)
    base, n = SCENARIO_INDEX_BASE["state_db_lost"], _size(sizes, "state_db_lost")
    half = n // 2
    ids = send_rest(router, [xray(base + i) for i in range(half)])
    _wait_states(router, list(ids.values()), lambda s: s == "classified", sizes.settle_seconds)
    router.stop()
    db = _state_db(router)
    db.write_bytes(b"")  # truncated to 0 bytes
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    router.start()
    wait_router_started(router, timeout=30)
    result.details["health_after_emptied"] = _health(router)
    scp.start()
    settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    scp.stop()  # down again: the second half stays owed
    more = send_rest(router, [xray(base + half + i) for i in range(n - half)])
    _wait_states(router, list(more.values()), lambda s: s == "classified", sizes.settle_seconds)
    router.stop()
    size = db.stat().st_size
    with open(db, "r+b") as fh:  # keep the header page, overwrite the middle ones
        fh.seek(4096)
        fh.write(b"\xde\xad\xbe\xef" * max(1024, (size - 8192) // 8))
    router.start()
    wait_router_started(router, timeout=30)
    result.details["health_after_corrupt"] = _health(router)
    scp.start()
    ids.update(more)
    result.sent = len(ids)
    final = settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    count(result, ids, final, scp, must_arrive=set(ids))
    log = router.log_text()
    result.details["rebuilds"] = log.count("rebuilding its work list from the beginning")
    result.details["set_aside"] = sorted(p.name.split("-")[0] for p in db.parent.glob("state.sqlite.corrupt-*"))
    result.details["health_at_end"] = _health(router)
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 11)
    if result.details["rebuilds"] < 2 or not result.details["set_aside"]:
        result.details["error"] = "the router did not rebuild both times"
    return result


# --------------------------------------------------------------------------- disk_full


def _fill(directory: Path) -> Path:
    """Take every free byte of the filesystem under ``directory``."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):  # large pieces, then the last bytes
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def disk_full(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """The StateDirectory is a 4 MB tmpfs. It is filled to the last byte while instances arrive
    and are forwarded, then freed. Nothing may be lost or stay ``processing``, no destination may
    stay blocked by a probe left in flight, and the status must say what is wrong meanwhile."""
    result = ScenarioResult("disk_full")
    state_dir = ctx.workdir / "router-state"
    state_dir.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state_dir)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        result.details["error"] = f"cannot mount a tmpfs for the StateDirectory (root needed): {mounted.stderr.strip()}"
        return result
    router: OrthancProcess | None = None
    try:
        scp = ctx.scp()
        router = ctx.router(scp, router={"StateDirectory": str(state_dir)})
        base, n = SCENARIO_INDEX_BASE["disk_full"], _size(sizes, "disk_full")
        warm = send_rest(router, [xray(base + i) for i in range(5)])
        settle([router], list(warm.values()), scp, set(warm), sizes.settle_seconds)
        filler = _fill(state_dir)
        ids = send_rest(router, [xray(base + 5 + i) for i in range(n)])
        deadline = time.monotonic() + 30
        health = _health(router)
        while "full" not in health and time.monotonic() < deadline:
            time.sleep(0.5)
            health = _health(router)
        result.details["health_while_full"] = health[:300]
        time.sleep(3.0)  # a few rounds of every thread against the full disk
        filler.unlink()
        ids.update(warm)
        result.sent = len(ids)
        final = settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
        count(result, ids, final, scp, must_arrive=set(ids))
        result.details["health_after"] = _health(router)
        counts = router.get_json("/bodypart-router/status").get("Counts", {}).get("instances", {})
        result.details["processing_after"] = counts.get("processing", 0)
        result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 12)
        if "full" not in result.details["health_while_full"]:
            result.details["error"] = "the status did not report the full disk"
    finally:
        if router is not None:
            router.stop()
        subprocess.run(["umount", "-l", str(state_dir)], capture_output=True)
    return result


# --------------------------------------------------------------------------- child_killed_repeatedly


def _children(pid: int) -> list[int]:
    """The classifier child processes of Orthanc process ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"bodypart_router.inference.engine" in cmdline:
            found.append(int(entry))
    return found


def child_killed_repeatedly(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """The classifier child is killed with SIGKILL several times while X-rays stream in. No
    innocent file may fail: a batch whose child died is classified again one file at a time."""
    result = ScenarioResult("child_killed_repeatedly")
    scp = ctx.scp()
    router = ctx.router(scp, router={"BatchSize": 8})
    base, n, kills_wanted = SCENARIO_INDEX_BASE["child_killed_repeatedly"], _size(sizes, "child_killed"), \
        _size(sizes, "child_kills")
    datasets = [xray(base + i) for i in range(n)]
    acked: dict[str, str] = {}
    pause = KILL_INTERVAL_SECONDS * (kills_wanted + 1) / n  # the stream lasts through every kill

    def sender() -> None:
        for ds in datasets:
            try:
                acked[str(ds.SOPInstanceUID)] = router.upload(to_bytes(ds))
            except requests.RequestException:
                pass
            time.sleep(pause)

    thread = threading.Thread(target=sender, name="faults-sender")
    thread.start()
    killed: list[int] = []
    rng = random.Random(19)
    while thread.is_alive() and len(killed) < kills_wanted:  # SIGKILL at random moments of the stream
        time.sleep(KILL_INTERVAL_SECONDS * rng.uniform(0.6, 1.4))
        children = [c for c in _children(router.pid or 0) if c not in killed]
        if children:
            os.kill(children[0], signal.SIGKILL)
            killed.append(children[0])
    thread.join()
    result.details["child_kills"] = len(killed)
    result.sent = len(acked)
    final = settle([router], list(acked.values()), scp, set(acked), sizes.settle_seconds)
    count(result, acked, final, scp, must_arrive=set(acked))
    result.details["failed"] = dict(Counter(s for s in final.values() if s.startswith("failed:")))
    result.details["retried_one_at_a_time"] = router.log_text().count("classifying them again one at a time")
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 13)
    return result


# --------------------------------------------------------------------------- destination_flapping


def destination_flapping(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """The destination goes down and comes back every second or so while instances are forwarded:
    every instance arrives, and none twice (counted by SOP Instance UID at the destination)."""
    result = ScenarioResult("destination_flapping")
    scp = ctx.scp()
    router = ctx.router(scp, router={"Retry": {"MaxAttempts": 200, "BackoffSeconds": 0.2, "MaxBackoffSeconds": 1.0},
                                     "CircuitBreaker": {"FailureThreshold": 2}})
    base, n, flaps = SCENARIO_INDEX_BASE["destination_flapping"], _size(sizes, "flapping"), _size(sizes, "flaps")
    stop = threading.Event()
    flapped = [0]

    def flapper() -> None:
        while not stop.is_set() and flapped[0] < flaps:
            time.sleep(0.7)
            scp.stop()
            time.sleep(0.9)
            scp.start()
            flapped[0] += 1

    thread = threading.Thread(target=flapper, name="faults-flapper")
    thread.start()
    ids = send_rest(router, [xray(base + i) for i in range(n)], workers=2)
    thread.join()
    stop.set()
    result.details["flaps"] = flapped[0]
    result.sent = len(ids)
    final = settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    count(result, ids, final, scp, must_arrive=set(ids))
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 14)
    return result


# --------------------------------------------------------------------------- decompression_bombs


def _patched_frame(name: str, patch: Callable[[bytearray], bytes]) -> bytes:
    ds = pydicom.dcmread(FIXTURES / name)
    (frame,) = list(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([patch(bytearray(frame))])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _siz(side: int) -> Callable[[bytearray], bytes]:
    def patch(frame: bytearray) -> bytes:
        start = frame.find(b"\xff\x4f\xff\x51")
        frame[start + 8:start + 16] = struct.pack(">II", side, side)
        return bytes(frame)
    return patch


def _sof55(side: int) -> Callable[[bytearray], bytes]:
    def patch(frame: bytearray) -> bytes:
        sof = frame.find(b"\xff\xf7")
        frame[sof + 5:sof + 9] = struct.pack(">HH", side, side)
        return bytes(frame)
    return patch


def _deflate_bomb(inflated_mb: int) -> bytes:
    """A deflated CR whose Pixel Data inflates to ``inflated_mb`` MB of zeros (a few hundred KB on disk)."""
    side = int((inflated_mb * 1024 * 1024 // 2) ** 0.5)
    ds = xray(0)
    ds.Rows = ds.Columns = side
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)
    meta_and_deflated = head.getvalue()
    # rebuild: file meta as written, then our own deflate stream of the dataset plus the Pixel Data
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    plain = io.BytesIO()
    ds.save_as(plain, enforce_file_format=True)
    plain_bytes = plain.getvalue()
    meta_end = _meta_end(plain_bytes)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    length = side * side * 2
    out = [compressor.compress(plain_bytes[meta_end:] + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", length))]
    zeros = bytes(16 * 1024 * 1024)
    left = length
    while left:
        piece = min(left, len(zeros))
        out.append(compressor.compress(zeros[:piece]))
        left -= piece
    out.append(compressor.flush())
    return meta_and_deflated[:_meta_end(meta_and_deflated)] + b"".join(out)


def _meta_end(data: bytes) -> int:
    i = 132
    while data[i:i + 2] == b"\x02\x00":
        vr = data[i + 4:i + 6]
        i += 12 + int.from_bytes(data[i + 8:i + 12], "little") if vr in (b"OB", b"UN", b"SQ", b"UT") else \
            8 + int.from_bytes(data[i + 6:i + 8], "little")
    return i


def _peak_mb(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def decompression_bombs(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Every case of the report, stored by REST: JPEG 2000 whose SIZ declares 16384² and 65535²
    (the DICOM header says the fixture's size), JPEG-LS declaring 30000², and a deflated dataset
    inflating to 600 MB (over the 256 MiB cap; the report's 2 GB one also takes Orthanc itself to
    2 GB while it parses the file, before any plugin runs). Each must end ``failed:<reason>``
    with the classifier child under ``CHILD_PEAK_LIMIT_MB`` and Orthanc under
    ``ORTHANC_PEAK_LIMIT_MB`` of peak resident memory."""
    result = ScenarioResult("decompression_bombs")
    scp = ctx.scp()
    router = ctx.router(scp)
    bombs = {
        "jpeg2000_siz_16384": _patched_frame("chest_j2k.dcm", _siz(16384)),
        "jpeg2000_siz_65535": _patched_frame("chest_j2k.dcm", _siz(65535)),
        "jpeg_ls_30000": _patched_frame("chest_jpegls.dcm", _sof55(30000)),
        "deflate_600mb": _deflate_bomb(600),
    }
    ids: dict[str, str] = {}
    for name, data in bombs.items():
        answer = router.request("POST", "/instances", data=data, headers={"Content-Type": "application/dicom"},
                                timeout=300)
        if answer.ok:
            ids[name] = answer.json()["ID"]
        else:
            result.details.setdefault("refused_by_orthanc", []).append(name)
    result.sent = len(ids)
    final = _wait_states(router, list(ids.values()), is_final, sizes.settle_seconds)
    result.details["states"] = {name: final.get(iid, "") for name, iid in ids.items()}
    result.details["sizes_kb"] = {name: len(data) // 1024 for name, data in bombs.items()}
    children = _children(router.pid or 0)
    result.details["child_peak_mb"] = max((_peak_mb(c) for c in children), default=0.0)
    result.details["orthanc_peak_mb"] = _peak_mb(router.pid)
    result.details["limits_mb"] = {"child": CHILD_PEAK_LIMIT_MB, "orthanc": ORTHANC_PEAK_LIMIT_MB}
    result.lost = sum(1 for s in result.details["states"].values() if not s.startswith("failed:"))
    result.duplicates = sum(n - 1 for n in scp.snapshot().values() if n > 1)
    over = (result.details["child_peak_mb"] > CHILD_PEAK_LIMIT_MB
            or result.details["orthanc_peak_mb"] > ORTHANC_PEAK_LIMIT_MB)
    if over:
        result.details["error"] = "a memory bound was exceeded"
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 15)
    return result


# --------------------------------------------------------------------------- csrf_and_hostile_bodies


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def csrf_and_hostile_bodies(ctx: Context, sizes: Sizes) -> ScenarioResult:
    """Deeply nested JSON, form-shaped and cross-site requests, oversized and mistyped bodies on
    every POST route, and headerless HTTP/1.0 ``prepare-stop``: all refused, Orthanc alive, routing
    still running, and no delivered instance sent again."""
    result = ScenarioResult("csrf_and_hostile_bodies")
    scp = ctx.scp()
    router = ctx.router(scp)
    base = SCENARIO_INDEX_BASE["csrf_and_hostile_bodies"]
    ids = send_rest(router, [xray(base + i) for i in range(10)])
    settle([router], list(ids.values()), scp, set(ids), sizes.settle_seconds)
    json_type = {"Content-Type": "application/json"}
    attempts: list[tuple[str, str, bytes, dict[str, str], int]] = []
    for path in ("/bodypart-router/failed/resubmit", "/bodypart-router/resubmit", "/bodypart-router/backfill"):
        attempts += [
            (path, "nested_600", b"[" * 600, json_type, 400),
            (path, "nested_100000", b"[" * 100_000, json_type, 400),
            (path, "form_nested", b"[" * 600 + b"=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
            (path, "text_plain_form", json.dumps({"IncludeDelivered": True, "Route": True}).encode(),
             {"Content-Type": "text/plain"}, 415),
            (path, "cross_origin", b"{}", {**json_type, "Origin": "https://evil.example"}, 403),
            (path, "cross_site_fetch", b"{}", {**json_type, "Sec-Fetch-Site": "cross-site"}, 403),
            (path, "oversized", b" " * (2 * 1024 * 1024), json_type, 413),
            (path, "null", b"null", json_type, 400),
        ]
    attempts += [
        ("/bodypart-router/failed/resubmit", "bool_delivery_ids", b'{"Deliveries": [true]}', json_type, 400),
        ("/bodypart-router/failed/resubmit", "string_false", b'{"IncludeDelivered": "false"}', json_type, 400),
        ("/bodypart-router/backfill", "route_string", b'{"Route": "true"}', json_type, 400),
    ]
    unexpected: list[str] = []
    for path, what, body, headers, status in attempts:
        try:
            answer = router.request("POST", path, data=body, headers=headers, timeout=30)
            if answer.status_code != status:
                unexpected.append(f"{path} {what}: {answer.status_code}")
        except requests.RequestException as exc:
            unexpected.append(f"{path} {what}: {type(exc).__name__}")
    for body in (b"", b'{"Token": ""}', b'{"Token": "guess"}'):
        answer = _raw(router.http_port, b"POST /bodypart-router/lifecycle/prepare-stop HTTP/1.0\r\n\r\n" + body)
        if b" 403 " not in answer.split(b"\r\n", 1)[0]:
            unexpected.append(f"prepare-stop headerless {body!r}: {answer[:40]!r}")
    result.details["requests"] = len(attempts) + 3
    result.details["unexpected_answers"] = unexpected
    status = router.get_json("/bodypart-router/status")
    result.details["health"] = status.get("Health")
    result.details["backfill_started"] = router.get_json("/bodypart-router/backfill") is not None
    result.sent = len(ids)
    final = settle([router], list(ids.values()), scp, set(ids), 10)
    count(result, ids, final, scp, must_arrive=set(ids))
    result.orthanc_alive = alive_probe([router], scp, SCENARIO_INDEX_BASE["alive_probe"] + 16)
    if unexpected or result.details["backfill_started"] or status.get("Health") == "stopped":
        result.details["error"] = "a hostile request was not refused as it should be"
    return result


SCENARIOS: dict[str, Callable[[Context, Sizes], ScenarioResult]] = {
    "state_db_lost": state_db_lost,
    "disk_full": disk_full,
    "child_killed_repeatedly": child_killed_repeatedly,
    "destination_flapping": destination_flapping,
    "decompression_bombs": decompression_bombs,
    "csrf_and_hostile_bodies": csrf_and_hostile_bodies,
}
