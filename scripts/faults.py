"""``make faults``: run the durability scenarios against real Orthanc processes.

Prints one JSON object per line and per scenario::

    {"scenario": "peer_down_60s", "sent": 120, "classified": 120, "delivered": 120,
     "lost": 0, "duplicates": 0, "orthanc_alive": true, "phi_in_logs": 0, ...}

and exits non-zero if any scenario lost or duplicated an instance, left Orthanc dead, or
let a patient identifier into a log. The scenarios themselves live in
``tests/support/fault_scenarios.py`` so the test suite runs the same code at CI size.

Usage::

    python scripts/faults.py                       # every scenario, full size
    python scripts/faults.py --size ci duplicate_stores malformed_corpus
    python scripts/faults.py --model path/to/model.onnx --keep   # another model; keep the logs
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugin"), str(REPO / "tests")]

from support.fault_scenarios import CI, FULL, SCENARIOS, run_scenario

SHIPPED_MODEL = REPO / "models" / "bodypart_router.onnx"


def main(argv: list[str] | None = None) -> int:
    # a SIGTERM (a CI timeout, `timeout`) unwinds like Ctrl-C, so every scenario's cleanup runs
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}")
    parser.add_argument("--size", choices=("full", "ci"), default="full",
                        help="full (make faults) or ci (the sizes the test suite uses)")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL if SHIPPED_MODEL.exists() else None,
                        help="ONNX model for the router (default: the shipped model, or a tiny test model "
                             "when it is missing; every class is routed to the same destination, so "
                             "accuracy does not matter here, but a real model's speed lets work pile up)")
    parser.add_argument("--runtime", default="host", help="Orthanc runtime (see tests/support/orthanc.py)")
    parser.add_argument("--quiet-orthanc", action="store_true",
                        help="start Orthanc without --verbose (the patient-identifier check then "
                             "reads warnings and errors only)")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's work directory and logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per association otherwise
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    sizes = CI if args.size == "ci" else FULL
    failed = []
    for name in names:
        result = run_scenario(name, sizes, runtime=args.runtime, model=args.model,
                              verbose_logs=not args.quiet_orthanc, keep=args.keep)
        print(result.json_line(), flush=True)
        if not result.ok:
            failed.append(name)
    if failed:
        print(f"faults: {', '.join(failed)} failed (see the lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
