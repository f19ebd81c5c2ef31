"""The ``bodypart-router`` command: JSON lines, the table, sorting into folders, the entry points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bodypart_router.inference.classes import CLASS_NAMES
from bodypart_router.cli import MODEL_ENV, main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture()
def inbox(tmp_path: Path, fixtures_dir: Path) -> Path:
    root = tmp_path / "inbox"
    (root / "sub").mkdir(parents=True)
    shutil.copy(fixtures_dir / "chest_mono1.dcm", root / "chest.dcm")
    shutil.copy(fixtures_dir / "tibia.png", root / "sub" / "tibia.png")
    (root / "sub" / "empty.dcm").write_bytes(b"")
    return root


def test_json_lines_have_the_documented_fields(inbox: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--model", str(tiny_model_path), "--json", str(inbox)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(x["path"]).name for x in lines] == ["chest.dcm", "empty.dcm", "tibia.png"]
    for ok in (lines[0], lines[2]):
        assert set(ok) == {"path", "class", "score", "scores", "routed_class", "region", "region_score", "view",
                           "view_score", "rotation", "rotation_score", "inverted", "inverted_score"}
        assert ok["region"] is None  # the tiny model has no region output
        assert ok["class"] in CLASS_NAMES and list(ok["scores"]) == list(CLASS_NAMES)
        assert ok["score"] == max(ok["scores"].values())
    assert lines[1]["error"] == "empty-file" and "class" not in lines[1]


def test_json_gives_region_view_rotation_and_the_routed_class(
        tmp_path: Path, tiny_model_with_facts_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2
    import numpy as np
    from support.tiny_model import TINY_REGION, UNCERTAIN_GRAY, gray_for

    cv2.imwrite(str(tmp_path / "a_spine.png"), np.full((64, 64), gray_for("spine"), np.uint8))
    cv2.imwrite(str(tmp_path / "b_unsure.png"), np.full((64, 64), UNCERTAIN_GRAY, np.uint8))
    assert main(["classify", "--model", str(tiny_model_with_facts_path), "--json", str(tmp_path)]) == 0
    spine, unsure = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert spine["class"] == spine["routed_class"] == "spine" and spine["region"] == TINY_REGION["spine"]
    assert (spine["view"], spine["rotation"], spine["inverted"]) == ("frontal", 0, False)
    assert unsure["score"] == pytest.approx(0.5, abs=0.01)  # halfway between two classes
    assert main(["classify", "--model", str(tiny_model_with_facts_path), "--json", "--minimum-score", "0.6",
                 str(tmp_path / "b_unsure.png")]) == 0
    assert json.loads(capsys.readouterr().out)["routed_class"] == "uncertain"
    assert main(["classify", "--model", str(tiny_model_with_facts_path), "--json", "--minimum-score", "0.0",
                 str(tmp_path / "b_unsure.png")]) == 0
    assert json.loads(capsys.readouterr().out)["routed_class"] == unsure["class"]
    with pytest.raises(SystemExit):
        main(["classify", "--minimum-score", "1.5", str(tmp_path)])


def test_minimum_score_default_is_the_plugins() -> None:
    from bodypart_router.cli import build_parser
    from bodypart_router.config import RouterConfig

    assert build_parser().parse_args(["classify", "x"]).minimum_score == RouterConfig.minimum_score


def test_table_output_lists_every_input(inbox: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--model", str(tiny_model_path), str(inbox / "chest.dcm"), str(inbox / "sub")]) == 0
    out = capsys.readouterr()
    rows = out.out.splitlines()
    assert rows[0].split() == ["path", "class", "score", "region", "view", "turn", "inverted"]
    assert len(rows) == 4
    assert "empty-file" in rows[2]
    assert any(c in rows[1] for c in CLASS_NAMES)
    assert "total" in out.err  # the summary goes to stderr with the progress bar


def test_model_from_environment_and_missing_model_message(
    inbox: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(MODEL_ENV, str(tiny_model_path))
    assert main(["classify", "--json", str(inbox / "chest.dcm")]) == 0
    assert json.loads(capsys.readouterr().out)["class"] in CLASS_NAMES
    monkeypatch.setenv(MODEL_ENV, str(inbox / "nope.onnx"))
    assert main(["classify", str(inbox)]) == 2
    assert "nope.onnx not found" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["--copy", "--link"])
def test_sort_places_files_by_class_and_reason(inbox: Path, tiny_model_path: Path, tmp_path: Path, mode: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "sorted"
    assert main(["sort", str(inbox), str(dst), "--model", str(tiny_model_path), mode]) == 0
    placed = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert len(placed) == 3
    assert "_unclassifiable/empty-file/sub/empty.dcm" in placed
    classified = [p for p in placed if not p.startswith("_unclassifiable")]
    assert {p.split("/", 1)[0] for p in classified} <= set(CLASS_NAMES)
    assert {p.split("/", 1)[1] for p in classified} == {"chest.dcm", "sub/tibia.png"}
    assert (inbox / "chest.dcm").exists()  # the source is left alone
    assert "total" in capsys.readouterr().out


def test_console_script_and_module_entry_points(tiny_model_path: Path, fixtures_dir: Path) -> None:
    script = Path(sys.executable).with_name("bodypart-router")
    if not script.exists():
        pytest.skip("package not installed in this environment (pip install -e .)")
    run = subprocess.run([str(script), "classify", "--model", str(tiny_model_path), "--json",
                          str(fixtures_dir / "chest_j2k.dcm")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["class"] in CLASS_NAMES
    version = subprocess.run([sys.executable, "-m", "bodypart_router", "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("bodypart-router ")


def test_native_decoder_noise_names_its_file_on_a_line_of_its_own(inbox: Path, tiny_model_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """A C decoder writing to file descriptor 2 (libjpeg: "Unsupported JPEG data precision 12")
    neither cuts through the progress bar nor goes unattributed."""
    import os

    from bodypart_router.inference import pipeline

    real = pipeline.decode_file

    def noisy(path: Path, **kw):  # type: ignore[no-untyped-def]
        if path.name == "chest.dcm":
            os.write(2, b"Unsupported JPEG data precision 12\n")
        return real(path, **kw)

    monkeypatch.setattr(pipeline, "decode_file", noisy)
    assert main(["classify", "--model", str(tiny_model_path), str(inbox)]) == 0
    err = capfd.readouterr().err
    assert f"{inbox / 'chest.dcm'}: decoder: Unsupported JPEG data precision 12" in err
    assert "\nUnsupported JPEG" not in err and not err.startswith("Unsupported")
    assert main(["classify", "--model", str(tiny_model_path), "--json", str(inbox)]) == 0
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert lines[0]["decoder_messages"] == ["Unsupported JPEG data precision 12"]
    assert "decoder_messages" not in lines[2]


def test_verbose_writes_the_routers_log_on_stderr(inbox: Path, tiny_model_path: Path, fixtures_dir: Path) -> None:
    """``--verbose``: what the router logs (here a decoder's error, with its traceback) is on stderr,
    not among the decoder's messages of the file; without it, stderr has none of it. (A process
    of its own: the decoders' messages are caught on file descriptor 2.)"""
    broken = bytearray((fixtures_dir / "chest_jpegls.dcm").read_bytes())
    broken[-1000:-950] = bytes(50)  # the header is fine, the JPEG-LS stream is not
    (inbox / "broken.dcm").write_bytes(bytes(broken))
    command = [sys.executable, "-m", "bodypart_router", "classify", "--model", str(tiny_model_path), "--json",
               str(inbox / "broken.dcm")]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(quiet.stdout)["error"] == "undecodable-pixels"
    assert "bodypart-router: ERROR" not in quiet.stderr and "Traceback" not in quiet.stderr
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True, timeout=120, check=True)
    line = json.loads(verbose.stdout)
    assert line["error"] == "undecodable-pixels" and "decoder_messages" not in line, line
    assert "bodypart-router: ERROR: Pixel Data (7FE0,0010) could not be decoded" in verbose.stderr
    assert "Traceback (most recent call last)" in verbose.stderr


def test_a_decoder_bug_is_a_failed_file_not_a_crash(inbox: Path, tiny_model_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected exception while decoding one file (a bug, not a refused file) gives that
    file the state the plugin would store, and the other files are classified."""
    from bodypart_router.inference import pipeline as pipeline

    real = pipeline.decode_file

    def buggy(path: Path, **kw):  # type: ignore[no-untyped-def]
        if path.name == "chest.dcm":
            raise TypeError("unsupported operand type(s) for *: 'NoneType' and 'int'")
        return real(path, **kw)

    monkeypatch.setattr(pipeline, "decode_file", buggy)
    assert main(["classify", "--model", str(tiny_model_path), "--json", str(inbox)]) == 0
    lines = {Path(line["path"]).name: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert lines["chest.dcm"]["error"] == "undecodable-pixels" and "NoneType" in lines["chest.dcm"]["detail"]
    assert lines["tibia.png"]["class"] in CLASS_NAMES
    dst = inbox.parent / "sorted"
    assert main(["sort", str(inbox), str(dst), "--model", str(tiny_model_path)]) == 0
    assert (dst / "_unclassifiable" / "undecodable-pixels" / "chest.dcm").is_file()
