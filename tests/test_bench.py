"""Smoke tests of the benchmark helpers at tiny sizes (no timing is asserted: CI machines vary)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pydicom
import pytest
from onnx import TensorProto, helper

from bench import baseline, classify, corpus, machine, model
from bodypart_router.inference.classes import CLASS_NAMES


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> corpus.Corpus:
    return corpus.build(tmp_path_factory.mktemp("corpus"), rows=60, columns=50, images=2, small_side=32)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smallest graph with the shipped model's I/O contract: mean pixel -> 5-way softmax."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor("w", TensorProto.FLOAT, [1, 5], [0.0, 1.0, 2.0, 3.0, 4.0])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    entry = proto.metadata_props.add()
    entry.key, entry.value = "model_name", "tiny-test"
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(proto, str(path))
    return path


def test_every_syntax_is_lossless_and_labelled(tiny_corpus: corpus.Corpus) -> None:
    for i, reference_path in enumerate(tiny_corpus.classify["uncompressed"]):
        reference = pydicom.dcmread(reference_path).pixel_array
        assert reference.shape == (60, 50)
        assert reference.max() < 2**corpus.BITS_STORED
        for syntax in corpus.SYNTAXES:
            ds = pydicom.dcmread(tiny_corpus.classify[syntax.key][i])
            assert ds.file_meta.TransferSyntaxUID == syntax.uid, syntax.key
            np.testing.assert_array_equal(ds.pixel_array, reference, err_msg=syntax.key)


def test_images_differ_and_are_deterministic() -> None:
    a, b = corpus.radiograph(0, 40, 30), corpus.radiograph(1, 40, 30)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, corpus.radiograph(0, 40, 30))


def test_build_reuses_a_matching_corpus(tiny_corpus: corpus.Corpus, tmp_path: Path) -> None:
    out = tiny_corpus.ingest["small"].parent.parent
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")}
    corpus.build(out, rows=60, columns=50, images=2, small_side=32)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")} == before
    sizes = json.loads((out / "manifest.json").read_text())["bytes"]
    assert sizes["ingest/small.dcm"] > 32 * 32 * 2


def test_unique_copies_get_new_uids_and_keep_pixels(tiny_corpus: corpus.Corpus) -> None:
    template = pydicom.dcmread(tiny_corpus.ingest["small"])
    blobs = corpus.unique_copies(tiny_corpus.ingest["small"], 3, "t")
    copies = [pydicom.dcmread(io.BytesIO(b)) for b in blobs]
    uids = {(c.StudyInstanceUID, c.SeriesInstanceUID, c.SOPInstanceUID) for c in copies}
    assert len(uids) == 3 and template.SOPInstanceUID not in {u[2] for u in uids}
    for c in copies:
        assert c.file_meta.MediaStorageSOPInstanceUID == c.SOPInstanceUID
        assert c.PixelData == template.PixelData


def test_baseline_inverts_monochrome1(tiny_corpus: corpus.Corpus) -> None:
    mono1 = pydicom.dcmread(tiny_corpus.classify["uncompressed"][0])
    mono2 = pydicom.dcmread(tiny_corpus.classify["uncompressed"][0])
    mono2.PhotometricInterpretation = "MONOCHROME2"
    mono2.PixelData = (2**corpus.BITS_STORED - 1 - mono1.pixel_array).astype("<u2").tobytes()
    shown = baseline.display_image(mono1)
    assert shown.dtype == np.uint8 and shown.shape == (60, 50)
    assert np.abs(shown.astype(int) - baseline.display_image(mono2)).max() <= 1


def test_baseline_classifies_with_the_model_contract(tiny_corpus: corpus.Corpus, tiny_model: Path) -> None:
    naive = baseline.NaiveClassifier(tiny_model)
    probabilities = naive.classify(tiny_corpus.classify["jpeg2000"][0].read_bytes())
    assert probabilities.shape == (len(CLASS_NAMES),)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_router_pipeline_spreads_batches_over_child_engines(tiny_corpus: corpus.Corpus,
                                                            shipped_model_path: Path) -> None:
    from bodypart_router.inference.engine import LocalEngine

    paths = [str(p) for key in ("uncompressed", "jpeg2000", "jpeg-ls") for p in tiny_corpus.classify[key]]
    pipeline = classify.RouterPipeline(classify.router_engines(shipped_model_path, 2), batch_size=2)
    try:
        outcomes = pipeline.classify_many(paths)
    finally:
        pipeline.close()
    expected = LocalEngine(shipped_model_path).classify(paths).outcomes
    # batches 0 and 2 went to worker 0, batch 1 to worker 1; the outcomes come back in input order
    assert [(o.class_name, round(o.score, 5)) for o in outcomes] == [
        (o.class_name, round(o.score, 5)) for o in expected]
    with pytest.raises(RuntimeError, match="did not classify 1 benchmark image"):
        one = classify.RouterPipeline(classify.router_engines(shipped_model_path, 1))
        try:
            one.classify_many([str(tiny_corpus.classify["uncompressed"][0]), "/nonexistent.dcm"])
        finally:
            one.close()


def test_measure_interleaves_and_reports_speedup() -> None:
    calls: list[tuple[str, int]] = []

    def recorder(name: str) -> classify.ClassifyMany:
        return lambda batch: calls.append((name, len(batch)))

    variants = [classify.Variant("router", recorder("router"), 4), classify.Variant("baseline", recorder("baseline"), 2)]
    result = classify.measure({"uncompressed": ["a", "b", "c"]}, variants, rounds=2)
    # warm-up on every input, then round 0 in order, round 1 reversed
    assert calls == [("router", 3), ("baseline", 3), ("router", 4), ("baseline", 2), ("baseline", 2), ("router", 4)]
    entry = result["uncompressed"]
    assert len(entry["router"]["rounds"]) == 2 and entry["baseline"]["images_per_s"] > 0
    assert set(entry["speedup"]) == {"router"}


def test_model_resolution_prefers_explicit_then_shipped(tiny_model: Path, tmp_path: Path) -> None:
    chosen = model.resolve(tmp_path, tmp_path / "build", model=tiny_model)
    assert (chosen.path, chosen.name, chosen.standin) == (tiny_model, "tiny-test", False)
    shipped = tmp_path / model.SHIPPED_MODEL
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(tiny_model.read_bytes())
    assert model.resolve(tmp_path, tmp_path / "build") == model.ModelChoice(shipped, "tiny-test", False)


def test_machine_facts_name_cpu_and_runtime() -> None:
    facts = machine.facts(provider="CPUExecutionProvider")
    assert facts["logical_cores"] >= 1 and facts["cpu_model"]
    assert "CPUExecutionProvider" in facts["onnxruntime_providers"]
    assert len(facts["load_average_at_start"]) == 3


def test_targets_read_results_and_fail_on_missing_arrivals() -> None:
    from bench.run import TARGETS, Target

    latency = next(t for t in TARGETS if t.path[0] == "e2e_latency_s")
    assert latency.check({"e2e_latency_s": {"p95": 0.4}})["met"] is True
    assert latency.check({"e2e_latency_s": {"p95": 1.2}})["met"] is False
    assert latency.check({"e2e_latency_s": {"p95": None}})["met"] is False  # some never arrived
    assert latency.check({}) is None  # section not run: no verdict
    ratio = Target("r", ("ingest_ratio", "worst"), 0.95, True)
    assert ratio.check({"ingest_ratio": {"worst": 0.95}})["met"] is True


def test_orthanc_config_without_router_differs_only_by_the_router(tiny_model: Path) -> None:
    from bench.servers import orthanc_config

    with_router = orthanc_config(tiny_model)
    without = orthanc_config(None)
    assert with_router["BodyPartRouter"]["ModelPath"] == str(tiny_model.resolve())
    assert "BodyPartRouter" not in without and "PythonScript" not in without
    assert not any("Python" in p for p in without["Plugins"])
    router_keys = {"BodyPartRouter", "PythonScript", "PythonVerbose", "LuaScripts", "Plugins"}
    same = set(with_router) - router_keys
    assert {k: with_router[k] for k in same} == {k: without[k] for k in same}


def test_mixed_payload_interleaves_unique_copies(tiny_corpus: corpus.Corpus, tmp_path: Path) -> None:
    from bench.servers import mixed_payload

    templates = [tiny_corpus.ingest["small"], tiny_corpus.ingest["small"], tiny_corpus.ingest["large"]]
    payload = mixed_payload("mix", templates, 7, tmp_path)
    rows = [pydicom.dcmread(f).Rows for f in payload.files]
    assert rows == [32, 32, 60, 32, 32, 60, 32]
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in payload.files}) == 7


@pytest.mark.integration
def test_senders_store_by_rest_and_c_store(tiny_corpus: corpus.Corpus, tmp_path: Path) -> None:
    """The benchmark's senders against a real Orthanc (without the router: only the senders are tested)."""
    from bench.servers import make_payload, orthanc_config, running, store_all
    from support.orthanc import get_runtime

    reason = get_runtime("host").unavailable()
    if reason:
        pytest.skip(reason)
    payload = make_payload("senders", tiny_corpus.ingest["small"], 6, tmp_path)
    with running(orthanc_config(None), "bench-senders", tmp_path / "orthanc", router=False) as server:
        assert store_all(server, [f.read_bytes() for f in payload.files[:3]], "rest", senders=2) > 0
        assert store_all(server, payload.files[3:], "c-store", senders=2) > 0
        assert server.get_json("/statistics")["CountInstances"] == 6
    assert not (tmp_path / "orthanc").exists()


def test_shipped_orthanc_config_is_read_despite_comments(tmp_path: Path) -> None:
    from bench.servers import shipped_settings
    from bodypart_router.config import load_orthanc_json

    path = tmp_path / "orthanc.json"
    path.write_text('/* header */ {\n  "Url": "http://host/x", // a comment\n  "A": "q\\"//", "N": 2 /* x */\n}\n')
    assert load_orthanc_json(path) == {"Url": "http://host/x", "A": 'q"//', "N": 2}
    assert "ConcurrentJobs" in shipped_settings()


def test_derived_uids_do_not_collide_across_tags() -> None:
    assert corpus.derived_uid("rss-1", "10") != corpus.derived_uid("rss-11", "0")
    assert corpus.derived_uid("a", "1") == corpus.derived_uid("a", "1")


def test_index_breakdown_files_each_transaction_under_what_it_did() -> None:
    from bench.index_breakdown import breakdown

    def tx(pid: str, *statements: str, params: str | None = None) -> list[str]:
        lines = [f"2026-12-07 14:12:35.788 UTC {pid} 3/1 LOG:  statement: BEGIN",
                 f"2026-12-07 14:12:35.788 UTC {pid} 3/1 LOG:  statement: SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"]
        for sql in statements:
            lines.append(f"2026-12-07 14:12:35.789 UTC {pid} 3/1 LOG:  execute 7fb1: {sql}")
            if params and sql.startswith("INSERT INTO Metadata"):
                lines.append(f"2026-12-07 14:12:35.789 UTC {pid} 3/1 DETAIL:  parameters: {params}")
        return lines + [f"2026-12-07 14:12:35.790 UTC {pid} 3/1 LOG:  statement: COMMIT",
                        f"2026-12-07 14:12:35.790 UTC {pid} 3/2 LOG:  statement: DEALLOCATE \"7fb1\""]

    lookup = "SELECT internalId, resourceType FROM Resources WHERE publicId=$1"
    log = [
        *tx("10", "SELECT * FROM CreateInstance($1, $2, $3, $4)", "INSERT INTO Changes VALUES(DEFAULT, $1, $2, $3, $4)"),
        *tx("11", lookup, "DELETE FROM Metadata WHERE id=$1 AND type=$2", "INSERT INTO Metadata VALUES ($1, $2, $3, $4)",
            params="$1 = '7', $2 = '1024', $3 = 'spine', $4 = '1'"),
        *tx("10", lookup, "INSERT INTO Metadata VALUES ($1, $2, $3, $4)", params="$1 = '7', $2 = '1099', $3 = 'x'"),
        *tx("12", lookup, "SELECT uuid, uncompressedSize, compressionType FROM AttachedFiles WHERE id=$1"),
        *tx("11", lookup, "INSERT INTO Changes VALUES(DEFAULT, $1, $2, $3, $4)"),
        *tx("12", "SELECT * FROM Changes WHERE seq>$1 ORDER BY seq LIMIT $2"),
        *tx("10", lookup),
        "2026-12-07 14:12:35.791 UTC 13 3/9 LOG:  statement: SELECT 1",
    ]
    got = breakdown("\n".join(log), instances=2, metadata_names={1024: "BodyPart"})
    assert got == {"store the instance (Orthanc)": 0.5, "metadata write: BodyPart": 0.5, "metadata write: type 1099": 0.5,
                   "attachment lookup (where the file is / the forward job reads it)": 0.5,
                   "change event (Orthanc: stable series, study...)": 0.5, "changes log read": 0.5,
                   "resource lookup (forward job submission)": 0.5, "other (start-up, shutdown, properties)": 0.5,
                   "total": 4.0}
