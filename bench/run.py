"""``make bench``: run the benchmarks, print a table, write ``bench/results.json``.

    python -m bench.run                 # everything, full size (about 15 minutes on 2 cores)
    python -m bench.run --quick         # same measurements, fewer rounds and instances
    python -m bench.run --only classify # a subset: classify, ingest, latency, rss

Each figure is checked against its target from the speed specification and the table says
which are met. The results file records the machine (CPU, cores, load when the run started),
the model (and whether it was a stand-in) and the inputs, so that figures from different
machines are never compared blindly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import classify, corpus, machine, model

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "bench"
RESULTS = REPO / "bench" / "results.json"
SECTIONS = ("classify", "ingest", "latency", "rss")


@dataclass(frozen=True)
class Target:
    """A pass/fail threshold from the speed specification."""

    name: str
    path: tuple[str, ...]  #: keys into results.json
    threshold: float
    higher_is_better: bool

    def check(self, results: dict) -> dict | None:
        value: Any = results
        for key in self.path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        met = value >= self.threshold if self.higher_is_better else value < self.threshold
        relation = ">=" if self.higher_is_better else "<"
        return {"name": self.name, "value": value, "target": f"{relation} {self.threshold:g}", "met": bool(met)}


TARGETS = (
    Target("router images/s, uncompressed 2500x3000", ("classify_per_s", "uncompressed", "router", "images_per_s"), 40, True),
    Target("router images/s, JPEG 2000", ("classify_per_s", "jpeg2000", "router", "images_per_s"), 15, True),
    Target("ingest ratio (worst case)", ("ingest_ratio", "worst"), 0.95, True),
    Target("store-to-peer p95 at 10/s (s)", ("e2e_latency_s", "p95"), 1.0, False),
    Target("Orthanc RSS after 1,000 instances (MB)", ("rss_mb", "after"), 600, False),
)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_classify(args: argparse.Namespace, chosen: model.ModelChoice, data: corpus.Corpus) -> dict:
    inputs = {key: [p.read_bytes() for p in paths] for key, paths in data.classify.items() if key in args.syntaxes}
    router_images, baseline_images, rounds = (16, 4, 2) if args.quick else (48, 8, 3)
    variants = classify.standard_variants(chosen.path, router_images, baseline_images, workers=args.workers)
    return classify.measure(
        inputs, variants, rounds=rounds,
        on_round=lambda s, v, rate: _progress(f"  classify {s:14s} {v:20s} {rate:7.1f} images/s"),
    )


def format_table(results: dict) -> str:
    """The human-readable summary: classification table, then the targets."""
    lines = []
    model_info = results["model"]
    lines.append(f"Model: {model_info['name']}" + ("  (STAND-IN: random weights, same architecture as shipped)"
                                                 if model_info["standin"] else ""))
    facts = results["machine"]
    lines.append(f"Machine: {facts['cpu_model']}, {facts['usable_cores']} cores, {facts['memory_gb']} GB, "
                 f"onnxruntime {facts['onnxruntime']} ({facts['provider']}), "
                 f"load at start {facts['load_average_at_start'][0]:.2f}")
    table = results.get("classify_per_s")
    if table:
        variants = [k for k in next(iter(table.values())) if k != "speedup"]
        lines.append("")
        header = f"{'classify images/s':20s}" + "".join(f"{v:>22s}" for v in variants) + f"{'speedup':>10s}"
        lines.append(header)
        lines.append("-" * len(header))
        for syntax, entry in table.items():
            title = corpus.SYNTAX_BY_KEY[syntax].title
            cells = "".join(f"{entry[v]['images_per_s']:>22.1f}" for v in variants)
            speedup = entry.get("speedup", {}).get("router")
            lines.append(f"{title:20s}{cells}{(f'{speedup:.1f}x' if speedup else '-'):>10s}")
    if results.get("targets"):
        lines.append("")
        for t in results["targets"]:
            value = t["value"]
            shown = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
            lines.append(f"{'PASS' if t['met'] else 'MISS'}  {t['name']}: {shown} (target {t['target']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and instances (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    parser.add_argument("--model", type=Path, help="ONNX model (default: models/bodypart_router.onnx)")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                        help="router worker-thread counts to measure (default: 1,2; 1 is the plugin default)")
    parser.add_argument("--syntaxes", type=lambda s: s.split(","), default=[s.key for s in corpus.SYNTAXES],
                        help="transfer syntaxes to classify (default: all of "
                             f"{','.join(s.key for s in corpus.SYNTAXES)})")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results file (default: {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    _progress(f"generating or reusing the corpus in {BUILD.relative_to(REPO)}/corpus ...")
    data = corpus.build(BUILD / "corpus")
    chosen = model.resolve(REPO, BUILD, args.model)
    from bodypart_router.classifier import Classifier

    provider = Classifier(chosen.path).provider
    results: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "mode": "quick" if args.quick else "full",
        "machine": machine.facts(provider),
        "model": {"name": chosen.name, "path": os.path.relpath(chosen.path, REPO), "standin": chosen.standin},
        "corpus": json.loads((BUILD / "corpus" / "manifest.json").read_text()),
    }
    runners: dict[str, Callable[[], None]] = {
        "classify": lambda: results.__setitem__("classify_per_s", run_classify(args, chosen, data)),
    }
    for section in sections:
        if section not in runners:
            _progress(f"{section}: not implemented yet, skipped")
            continue
        _progress(f"running {section} ...")
        runners[section]()

    results["targets"] = [c for c in (t.check(results) for t in TARGETS) if c is not None]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.output)
    print(format_table(results))
    print(f"\nwritten {os.path.relpath(args.output, Path.cwd())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
