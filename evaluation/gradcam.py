"""Grad-CAM heatmaps of a hash model (Selvaraju et al. 2017), as in Huang et al. 2022, Figure 4.

A hash model has no class score, so the score explained is the inner product C(x) . h of the
relaxed outputs with a code h: by default the image's own code sign(C(x)), i.e. "what makes
the model produce this code". The feature map is the output of the last ``nn.Conv2d`` of the
backbone (registration order): efficientnet_lite0's ``_conv_head``, VGG's last conv, ResNet's
last block's ``conv2``, small_cnn's second conv.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from retrieval.core.codes import as_codes, unpack


def last_conv(module: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` (or subclass) registered in ``module``; ValueError if none."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(module).__name__} has no nn.Conv2d layer to take Grad-CAM from")
    return convs[-1]


def grad_cam(
    model: nn.Module, images: torch.Tensor, codes: np.ndarray | None = None, layer: nn.Module | None = None
) -> torch.Tensor:
    """Heatmaps of score C(x) . h at ``layer`` (default: the backbone's last conv).

    Shape: images (n, 3, H, W) in [0, 1], codes (n, K/8) packed or None (each image's own
    code) -> (n, H, W) float in [0, 1], each map scaled so its maximum is 1 (all zero if the
    ReLU leaves nothing).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (n, 3, H, W); got {tuple(images.shape)}")
    layer = last_conv(model.backbone) if layer is None else layer
    seen: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("a", out))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # keeps a graph with frozen weights
            c = model(x)
            if codes is None:
                h = (c.detach() > 0).to(c.dtype) * 2 - 1
            else:
                h = unpack(as_codes(codes)).to(c)
                if h.shape != c.shape:
                    raise ValueError(f"codes must be ({c.shape[0]}, {c.shape[1] // 8}); got {codes.shape}")
            activation = seen["a"]
            (grad,) = torch.autograd.grad((c * h).sum(), activation)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).clamp(0, 1).cpu()


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.45) -> np.ndarray:
    """Blend a heatmap (jet colours) over an image. Shape: (3, H, W), (H, W) -> (H, W, 3) in [0, 1]."""
    from matplotlib import colormaps

    heat = colormaps["jet"](cam.detach().cpu().numpy())[..., :3]
    base = image.detach().cpu().permute(1, 2, 0).numpy()
    return np.clip((1 - alpha) * base + alpha * heat, 0, 1)


def cam_entropy(cam: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of each heatmap as a distribution: 1 = spread evenly, 0 = one pixel.

    The paper reads dispersed warm pixels as diverted attention; this puts a number on it.
    Shape: (n, H, W) -> (n,).
    """
    p = cam.flatten(1).double()
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
    ent = -(p * p.clamp_min(1e-300).log()).sum(dim=1)
    return (ent / np.log(p.shape[1])).float()


def cam_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of paired heatmaps (0 where one is constant). (n, H, W) x2 -> (n,)."""
    x, y = a.flatten(1).double(), b.flatten(1).double()
    x, y = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    den = x.norm(dim=1) * y.norm(dim=1)
    return torch.where(den > 0, (x * y).sum(dim=1) / den.clamp_min(1e-300), 0.0).float()
