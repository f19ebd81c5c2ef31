"""``bodypart-router``: classify or sort X-ray files from the command line, without Orthanc.

    bodypart-router classify [--model PATH] [--json] [--verbose] PATH...
    bodypart-router sort SRC DST [--model PATH] [--copy | --link] [--verbose]
    bodypart-router bootstrap-path [--lua]

``classify`` prints one JSON object per input with ``--json``
(``{"path", "class", "score", "scores", "routed_class", "region", "region_score", "view",
"view_score", "rotation", "rotation_score", "inverted", "inverted_score"}`` or
``{"path", "error", "detail"}``), else a table. ``routed_class`` is the class after the
``--minimum-score`` gate (``uncertain`` below it), as the Orthanc plugin decides with the same
default ``MinimumScore``. ``sort`` copies (or hard-links) every file under SRC into
``DST/<class>/`` or ``DST/_unclassifiable/<reason>/``, keeping its path
relative to SRC. ``bootstrap-path`` prints where this installation's Orthanc bootstrap script
is (for ``PythonScript``; ``--lua``: the shutdown hook for ``LuaScripts``), e.g. after a wheel install.
``--verbose`` (``classify``, ``sort``) writes the router's log on stderr: a file that fails on an
unexpected error gets its traceback there; its outcome is in the output either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from tqdm import tqdm

from . import __version__, logs
from .inference.classes import CLASS_NAMES, UNCERTAIN
from .config import RouterConfig
from .inference.pipeline import DEFAULT_BATCH_SIZE, Result, classify_paths, iter_files

if TYPE_CHECKING:
    from .inference.classifier import Classifier

#: Environment variable naming the model when ``--model`` is not given.
MODEL_ENV = "BODYPART_ROUTER_MODEL"
#: The model shipped in the repository checkout this package lives in.
REPO_MODEL = Path(__file__).resolve().parents[2] / "models" / "bodypart_router.onnx"
#: Decoding processes by default: decoding, not inference, is the cost.
DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))
#: Folder, under DST, for files that got a reason instead of a class.
UNCLASSIFIABLE_DIR = "_unclassifiable"
#: The files Orthanc's configuration names (``PythonScript``, ``LuaScripts``), shipped in the package.
BOOTSTRAP_DIR = Path(__file__).resolve().parent / "orthanc_plugin" / "bootstrap"
BOOTSTRAP_SCRIPT = BOOTSTRAP_DIR / "orthanc_bootstrap.py"
SHUTDOWN_LUA = BOOTSTRAP_DIR / "shutdown.lua"


def default_model() -> Path:
    """``$BODYPART_ROUTER_MODEL`` if set, else ``models/bodypart_router.onnx`` of the checkout."""
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else REPO_MODEL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bodypart-router", description="Classify X-rays by body part from their pixels.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true",
                        help="log what the router does on stderr, with tracebacks of unexpected errors")

    model_help = f"ONNX model (default: ${MODEL_ENV} or {REPO_MODEL})"
    classify = sub.add_parser("classify", parents=[common],
                              help="classify DICOM, PNG or JPEG files and folders (recursively)")
    classify.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    classify.add_argument("--model", type=Path, default=None, help=model_help)
    classify.add_argument("--json", action="store_true", help="one JSON object per input, one per line")
    classify.add_argument("--minimum-score", type=_score, default=RouterConfig.minimum_score,
                          help=f"below this score the routed class is {UNCERTAIN!r} "
                               f"(default {RouterConfig.minimum_score}, the plugin's MinimumScore default)")
    classify.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                          help=f"images per inference run (default {DEFAULT_BATCH_SIZE})")
    classify.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                          help=f"processes decoding files in parallel (default {DEFAULT_JOBS})")

    sort = sub.add_parser("sort", parents=[common], help="copy files into DST/<class>/ folders")
    sort.add_argument("src", type=Path, metavar="SRC", help="folder (or file) to sort")
    sort.add_argument("dst", type=Path, metavar="DST", help="destination folder, created if missing")
    sort.add_argument("--model", type=Path, default=None, help=model_help)
    how = sort.add_mutually_exclusive_group()
    how.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copy the files (default)")
    how.add_argument("--link", dest="mode", action="store_const", const="link",
                     help="hard-link the files instead of copying (same file system; copies otherwise)")
    sort.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                      help=f"processes decoding files in parallel (default {DEFAULT_JOBS})")
    sort.set_defaults(mode="copy")

    bootstrap = sub.add_parser("bootstrap-path", help="print the path of the script for Orthanc's PythonScript "
                                                      "(the bootstrap of this installation of the package)")
    bootstrap.add_argument("--lua", action="store_true", help="print the path of the shutdown hook for LuaScripts instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (0 done, 2 bad usage or unusable model)."""
    args = build_parser().parse_args(argv)
    logs.log_to_stderr(getattr(args, "verbose", False), stream=cast(TextIO, _AboveProgressBar()))
    if args.command == "bootstrap-path":
        print(SHUTDOWN_LUA if args.lua else BOOTSTRAP_SCRIPT)
        return 0
    _quiet_libraries()
    from .inference.classifier import Classifier, ModelLoadError  # onnxruntime loads only once arguments are valid

    model = args.model or default_model()
    try:
        classifier = Classifier(model)
    except ModelLoadError as exc:
        print(f"bodypart-router: {exc}", file=sys.stderr)
        return 2
    if args.command == "classify":
        return _classify(args, classifier)
    return _sort(args, classifier)


def _classify(args: argparse.Namespace, classifier: Classifier) -> int:
    files = list(iter_files(args.paths))
    results = classify_paths(files, classifier, batch_size=max(1, args.batch_size), workers=args.jobs,
                             capture_messages=True)
    if args.json:
        for result in results:
            print(json.dumps(result_to_json(result, args.minimum_score)), flush=True)
        return 0
    print(f"model {classifier.version} on {classifier.provider}", file=sys.stderr)
    width = max([len(str(p)) for p in files] + [4])
    print(f"{'path':<{width}}  {'class':<16}  score  {'region':<15} {'view':<8} turn  inverted")
    counts: Counter[str] = Counter()
    with tqdm(total=len(files), unit="file", file=sys.stderr, disable=None, leave=False) as bar:
        for result in results:
            tqdm.write(_table_row(result, width), file=sys.stdout)
            for message in result.messages:  # on its own line, above the progress bar, with the file
                tqdm.write(f"{result.path}: decoder: {message}", file=sys.stderr)
            counts[result.label] += 1
            bar.update()
    _print_summary(counts, file=sys.stderr)
    return 0


def _sort(args: argparse.Namespace, classifier: Classifier) -> int:
    src: Path = args.src
    if not src.exists():
        print(f"bodypart-router: SRC {src} does not exist", file=sys.stderr)
        return 2
    files = list(iter_files([src]))
    src_is_dir = src.is_dir()
    counts: Counter[str] = Counter()
    with tqdm(total=len(files), unit="file", file=sys.stderr, disable=None) as bar:
        for result in classify_paths(files, classifier, workers=args.jobs, capture_messages=True):
            for message in result.messages:
                tqdm.write(f"{result.path}: decoder: {message}", file=sys.stderr)
            folder = result.prediction.class_name if result.prediction else f"{UNCLASSIFIABLE_DIR}/{result.reason}"
            relative = result.path.relative_to(src) if src_is_dir else Path(result.path.name)
            target = args.dst / folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _place(result.path, target, args.mode)
            counts[folder] += 1
            bar.update()
    print(f"sorted {len(files)} file(s) from {src} into {args.dst} ({args.mode}), model {classifier.version}")
    _print_summary(counts, file=sys.stdout)
    return 0


def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def result_to_json(result: Result, minimum_score: float = RouterConfig.minimum_score) -> dict:
    """The ``--json`` line for one result."""
    if result.prediction is not None:
        p = result.prediction
        out = {"path": str(result.path), "class": p.class_name, "score": p.score, "scores": p.scores,
               "routed_class": p.class_name if p.score >= minimum_score else UNCERTAIN,
               "region": p.region, "region_score": p.region_score, "view": p.view, "view_score": p.view_score,
               "rotation": p.rotation, "rotation_score": p.rotation_score,
               "inverted": p.inverted, "inverted_score": p.inverted_score}
    else:
        assert result.error is not None
        out = {"path": str(result.path), "error": result.error.reason.value, "detail": result.error.detail}
    if result.messages:
        out["decoder_messages"] = list(result.messages)
    return out


def _table_row(result: Result, width: int) -> str:
    if result.prediction is not None:
        p = result.prediction
        extra = f"  {p.region or '-':<15} {p.view or '-':<8} {'-' if p.rotation is None else p.rotation:>4}  " \
                f"{'-' if p.inverted is None else ('yes' if p.inverted else 'no')}"
        return f"{str(result.path):<{width}}  {p.class_name:<16}  {p.score:.3f}{extra}"
    assert result.error is not None
    return f"{str(result.path):<{width}}  {'-':<16}  {result.error.reason.value}: {result.error.detail}"


def _print_summary(counts: Counter[str], file: TextIO) -> None:
    order = [c for c in CLASS_NAMES if c in counts] + sorted(k for k in counts if k not in CLASS_NAMES)
    width = max([len(k) for k in order] + [5])
    print(f"{'class':<{width}}  files", file=file)
    for key in order:
        print(f"{key:<{width}}  {counts[key]:>5}", file=file)
    print(f"{'total':<{width}}  {sum(counts.values()):>5}", file=file)


def _place(source: Path, target: Path, mode: str) -> None:
    if target.exists():
        target.unlink()
    if mode == "link":
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed: fall back to a copy
            pass
    shutil.copy2(source, target)


class _AboveProgressBar:
    """stderr for log lines, written above the progress bar instead of through it."""

    def write(self, text: str) -> None:
        tqdm.write(text.rstrip("\n"), file=sys.stderr)

    def flush(self) -> None:
        sys.stderr.flush()


def _quiet_libraries() -> None:
    """pydicom warns about every odd-but-readable file; a CLI run over an archive would drown in them."""
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("pydicom").setLevel(logging.ERROR)


if __name__ == "__main__":
    raise SystemExit(main())
