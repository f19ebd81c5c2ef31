"""``make bench``: run the benchmarks, print a table, write ``bench/results.json``.

    python -m bench.run                 # everything, full size (about 15 minutes on 2 cores)
    python -m bench.run --quick         # same measurements, fewer rounds and instances
    python -m bench.run --only classify # a subset: classify, ingest, latency, rss, index

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

from bodypart_router.config import RouterConfig, load_orthanc_json

from . import classify, corpus, ingest, latency, machine, memory, model, scale
from .servers import SHIPPED_CONFIG, make_payload

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "bench"
RESULTS = REPO / "bench" / "results.json"
SECTIONS = ("classify", "ingest", "latency", "rss", "index")


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
        if value is None:  # e.g. a latency percentile of instances that never arrived
            return {"name": self.name, "value": None, "target": self._relation(), "met": False}
        met = value >= self.threshold if self.higher_is_better else value < self.threshold
        return {"name": self.name, "value": value, "target": self._relation(), "met": bool(met)}

    def _relation(self) -> str:
        return f"{'>=' if self.higher_is_better else '<'} {self.threshold:g}"


TARGETS = (
    Target("router images/s, uncompressed 2500x3000", ("classify_per_s", "uncompressed", "router", "images_per_s"), 40, True),
    Target("router images/s, JPEG 2000", ("classify_per_s", "jpeg2000", "router", "images_per_s"), 15, True),
    Target("ingest ratio (worst case)", ("ingest_ratio", "worst"), 0.95, True),
    Target("store-to-peer p95 at 10/s (s)", ("e2e_latency_s", "p95"), 1.0, False),
    Target("Orthanc RSS after 1,000 instances, idle (MB)", ("rss_mb", "after"), 600, False),
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


def shipped_router_settings() -> dict[str, int]:
    """Workers and BatchSize of the shipped configuration (the plugin's defaults where it is silent)."""
    section = load_orthanc_json(SHIPPED_CONFIG).get("BodyPartRouter", {})
    return {"workers": int(section.get("Workers", RouterConfig.workers)),
            "batch_size": int(section.get("BatchSize", RouterConfig.batch_size))}


def _write(results: dict, output: Path) -> None:
    """Write the results atomically, with the target verdicts for what has been measured so far."""
    results["targets"] = [c for c in (t.check(results) for t in TARGETS) if c is not None]
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(output)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_classify(args: argparse.Namespace, chosen: model.ModelChoice, data: corpus.Corpus) -> dict:
    inputs = {key: [str(p) for p in paths] for key, paths in data.classify.items() if key in args.syntaxes}
    router_images, baseline_images, rounds = (16, 4, 2) if args.quick else (48, 8, 3)
    shipped = shipped_router_settings()
    variants = classify.standard_variants(chosen.path, router_images, baseline_images, workers=args.workers,
                                          shipped_workers=shipped["workers"], batch_size=shipped["batch_size"])
    return classify.measure(
        inputs, variants, rounds=rounds,
        on_round=lambda s, v, rate: _progress(f"  classify {s:14s} {v:20s} {rate:7.1f} images/s"),
    )


def run_ingest(args: argparse.Namespace, chosen: model.ModelChoice, data: corpus.Corpus) -> dict:
    cases = (("small", 60), ("large", 10)) if args.quick else ingest.CASES
    return ingest.measure(
        data, chosen.path, BUILD / "work", cases=cases, rounds=1 if args.quick else 5,
        on_trial=lambda case, variant, rate: _progress(f"  ingest {case:14s} {variant:15s} {rate:7.1f} instances/s"),
    )


def run_latency(args: argparse.Namespace, chosen: model.ModelChoice, data: corpus.Corpus) -> dict:
    rate, seconds = 10.0, (15 if args.quick else 60)
    count = int(rate * seconds)
    small = make_payload(f"latency-small-{count}", data.ingest["small"], count, BUILD / "work" / "payloads")
    _progress(f"  latency: {count} x 0.5 MB at {rate:g}/s ...")
    result = latency.measure(small, chosen.path, BUILD / "work", rate=rate)
    if not args.quick:  # also with full-size radiographs: 2500x3000 JPEG 2000 (6 MB each), 30 s
        count = int(rate * 30)
        large = make_payload(f"latency-j2k-{count}", data.classify["jpeg2000"][0], count, BUILD / "work" / "payloads")
        _progress(f"  latency: {count} x 2500x3000 JPEG 2000 at {rate:g}/s ...")
        result["jpeg2000_2500x3000"] = latency.measure(large, chosen.path, BUILD / "work", rate=rate)
    return result


def run_rss(args: argparse.Namespace, chosen: model.ModelChoice, data: corpus.Corpus) -> dict:
    instances = 200 if args.quick else 1000
    _progress(f"  rss: storing {instances} instances ...")
    return memory.measure(data, chosen.path, BUILD / "work", instances=instances)


def run_index(args: argparse.Namespace, chosen: model.ModelChoice, data: corpus.Corpus) -> dict:
    instances = 60 if args.quick else 300
    _progress(f"  index: {instances} instances on a PostgreSQL index, with and without the router ...")
    return scale.measure(data, chosen.path, BUILD / "work", instances=instances, rounds=1 if args.quick else 2)


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
    if facts["load_average_at_start"][0] > 0.5 * (facts["usable_cores"] or 1):  # the run's own load comes later
        lines.append("WARNING: the machine was busy with other work when the run started; figures may be too low.")
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
    ingest_results = results.get("ingest_ratio")
    if ingest_results:
        lines.append("")
        header = f"{'ingest instances/s':28s}{'with router':>13s}{'without':>10s}{'ratio':>8s}{'drain s':>9s}"
        lines.append(header)
        lines.append("-" * len(header))
        for case, entry in ingest_results.items():
            if not isinstance(entry, dict):
                continue
            protocol = case.split("_", 1)[1]
            title = f"{entry['instances']} x {entry['megabytes'] / entry['instances']:.1f} MB, {protocol.upper()}"
            drain = max(entry["drain_after_last_store_s"], default=0.0)
            lines.append(f"{title:28s}{entry['with_router_per_s']:>13.1f}{entry['without_router_per_s']:>10.1f}"
                         f"{entry['ratio']:>8.2f}{drain:>9.1f}")
    lat = results.get("e2e_latency_s")
    if lat:
        lines.append("")
        for title, entry in (("0.5 MB", lat), ("2500x3000 JPEG 2000", lat.get("jpeg2000_2500x3000"))):
            if entry:
                lines.append(f"store -> peer at {entry['rate_per_s']:g}/s for {entry['duration_s']:g} s, {title}: "
                             f"p50 {entry['p50']} s, p95 {entry['p95']} s, max {entry['max']} s"
                             + (f", {entry['not_arrived']} NOT ARRIVED" if entry["not_arrived"] else ""))
    rss = results.get("rss_mb")
    if rss:
        lines.append(f"Orthanc RSS with the router, {rss['instances']} instances: before {rss['before']:.0f} MB, "
                     f"peak {rss['peak']:.0f} MB, at drain {rss.get('at_drain', rss['after']):.0f} MB, "
                     f"after {rss['after']:.0f} MB idle")
    index = results.get("index_load")
    if index and "skipped" not in index:
        tx, rows, rate = (index["index_transactions_per_instance"], index["index_rows_written_per_instance"],
                          index["ingest_per_s"])
        lines.append(f"PostgreSQL index per stored instance: {tx['with_router']} transactions / {rows['with_router']} "
                     f"rows written with the router, {tx['without_router']} / {rows['without_router']} without; "
                     f"ingest {rate['with_router']} vs {rate['without_router']} instances/s")
        for purpose, per_instance in index.get("transactions_by_purpose", {}).items():
            lines.append(f"  {per_instance:5.2f}  {purpose}")
    elif index:
        lines.append(f"PostgreSQL index: skipped ({index['skipped']})")
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
                        help="router worker counts measured besides the shipped one (default: 1,2)")
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
    from bodypart_router.inference.classifier import Classifier

    provider = Classifier(chosen.path).provider
    results: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "mode": "quick" if args.quick else "full",
        "machine": machine.facts(provider),
        "model": {"name": chosen.name, "path": os.path.relpath(chosen.path, REPO), "standin": chosen.standin},
        # What the "router" variant runs with: BodyPartRouter.Workers / BatchSize as shipped.
        "router_settings": shipped_router_settings(),
        "corpus": json.loads((BUILD / "corpus" / "manifest.json").read_text()),
    }
    runners: dict[str, tuple[str, Callable[..., dict]]] = {
        "classify": ("classify_per_s", run_classify),
        "ingest": ("ingest_ratio", run_ingest),
        "latency": ("e2e_latency_s", run_latency),
        "rss": ("rss_mb", run_rss),
        "index": ("index_load", run_index),
    }
    # A run of some sections updates them in an existing results file and keeps the others.
    partial = set(sections) != set(SECTIONS) and args.output.exists()
    previous = json.loads(args.output.read_text()) if partial else {}
    results["section_runs"] = previous.get("section_runs", {})
    for key, _ in runners.values():
        if key in previous:
            results[key] = previous[key]
    for section in sections:
        key, runner = runners[section]
        _progress(f"running {section} ...")
        results[key] = runner(args, chosen, data)
        results["section_runs"][key] = {"finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                        "mode": results["mode"], "load_average": list(os.getloadavg())}
        _write(results, args.output)  # after every section: a later failure loses nothing

    results["load_average_at_end"] = list(os.getloadavg())
    _write(results, args.output)
    print(format_table(results))
    print(f"\nwritten {os.path.relpath(args.output, Path.cwd())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
