"""Which ONNX model the benchmark measures.

Normally the shipped ``models/bodypart_router.onnx``. Where it is missing (a checkout that has not
trained or fetched it), the benchmark still needs a network of the same cost, or its images/s would
flatter the router: :func:`build_standin` writes an EfficientNet-Lite0 (the shipped architecture)
with random weights and the same I/O contract. Its predictions are meaningless, its speed is not,
and every result produced with it says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bodypart_router.inference.classes import CLASS_NAMES

#: The shipped model, relative to the repository root.
SHIPPED_MODEL = Path("models/bodypart_router.onnx")
STANDIN_NAME = "standin-efficientnet-lite0-random-weights"


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    #: ``model_name`` from the ONNX metadata (or the stand-in's name).
    name: str
    #: True when the figures come from the random-weight stand-in, not the shipped model.
    standin: bool


def resolve(repo_root: Path, build_dir: Path, model: Path | None = None) -> ModelChoice:
    """The explicit ``model`` if given, else the shipped model, else a (cached) stand-in."""
    if model is not None:
        return ModelChoice(model, _model_name(model), standin=False)
    shipped = repo_root / SHIPPED_MODEL
    if shipped.exists():
        return ModelChoice(shipped, _model_name(shipped), standin=False)
    standin = build_dir / f"{STANDIN_NAME}.onnx"
    if not standin.exists():
        build_standin(standin)
    return ModelChoice(standin, STANDIN_NAME, standin=True)


def _model_name(path: Path) -> str:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return meta.get("model_name", path.stem)


def build_standin(path: Path) -> None:
    """Export a random-weight EfficientNet-Lite0 with the shipped model's I/O contract to ``path``.

    Input ``image`` float32 [N,1,224,224] in [0,1]; gray->RGB and ImageNet normalisation inside
    the graph; output ``probabilities`` float32 [N,5] (softmax). Needs torch (``.[train]``).
    """
    import onnx
    import torch
    from torch import nn

    def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                act: bool = True) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        return layers + [nn.ReLU6()] if act else layers

    class MBConv(nn.Module):
        def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
            super().__init__()
            mid = c_in * expand
            layers = conv_bn(c_in, mid, 1) if expand != 1 else []
            layers += conv_bn(mid, mid, kernel, stride, groups=mid)
            layers += conv_bn(mid, c_out, 1, act=False)
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x) if self.residual else self.body(x)

    class StandIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            blocks: list[nn.Module] = conv_bn(3, 32, 3, 2)
            c_in = 32
            # EfficientNet-Lite0 stages: kernel, stride, expand, out channels, repeats.
            for kernel, stride, expand, c_out, repeats in [
                (3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1),
            ]:
                for i in range(repeats):
                    blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                    c_in = c_out
            blocks += conv_bn(c_in, 1280, 1)
            self.features = nn.Sequential(*blocks)
            self.classifier = nn.Linear(1280, len(CLASS_NAMES))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = (image.expand(-1, 3, -1, -1) - self.mean) / self.std
            x = self.features(x).mean(dim=(2, 3))
            return torch.softmax(self.classifier(x), dim=1)

    torch.manual_seed(0)
    net = StandIn().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        net, (torch.zeros(1, 1, 224, 224),), str(tmp),
        input_names=["image"], output_names=["probabilities"],
        dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    proto = onnx.load(str(tmp))
    for key, value in (("labels", json.dumps(list(CLASS_NAMES))), ("model_name", STANDIN_NAME)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    tmp.unlink()
