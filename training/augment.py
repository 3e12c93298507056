"""Augmentation on batches of canvases (torch): what scanners and pens do, applied to every image.

Canvases are ink-bright on an exactly-zero background (the product's preprocessing). Every image gets a
random affine warp (rotation, shear, scale, translation; never a flip), stroke width change (dilation or
erosion), ink strength gain, optional blur, noise on the ink and faint specks on the background, so that
neither ink darkness, stroke width nor paper residue can identify a capture session.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def affine_theta(ang: torch.Tensor, sh: torch.Tensor, sc: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                 aspect: float) -> torch.Tensor:
    """(B, 2, 3) matrices for ``F.affine_grid`` on canvases of width / height ``aspect``: a rotation by ``ang``
    radians in pixels, a horizontal shear ``sh`` (normalised units), zoom ``sc``, shift (``tx``, ``ty``).

    affine_grid maps output to input coordinates normalised by the half-width and half-height, so a pixel
    rotation reads x_in = cos x - sin y / aspect, y_in = sin x aspect + cos y. (Both members of the shipped
    model were trained with the aspect ratio inverted, which made an "8 degree rotation" a shear on the 2:1
    canvas: docs/model.md, "Loss".)"""
    cos, sin = torch.cos(ang), torch.sin(ang)
    a11 = cos / sc
    a12 = (-sin / aspect + sh) / sc
    a21 = sin * aspect / sc
    a22 = cos / sc
    return torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)


def augment(x: torch.Tensor, cfg: dict, gen: torch.Generator) -> torch.Tensor:
    """x: (B, 1, H, W) float in [0, 1] -> augmented (B, 1, H, W) in [0, 1]."""
    b, _, h, w = x.shape

    def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    # stroke width: dilation (max-pool) or erosion (min-pool) for a share of the batch
    r = torch.rand(b, generator=gen)
    dil = F.max_pool2d(x, 3, stride=1, padding=1)
    ero = -F.max_pool2d(-x, 3, stride=1, padding=1)
    sel_d = (r < cfg["dilate_p"]).view(b, 1, 1, 1)
    sel_e = ((r >= cfg["dilate_p"]) & (r < cfg["dilate_p"] + cfg["erode_p"])).view(b, 1, 1, 1)
    x = torch.where(sel_d, dil, torch.where(sel_e, ero, x))

    # affine warp
    ang = u(-cfg["rotation_deg"], cfg["rotation_deg"]) * math.pi / 180
    sh = u(-cfg["shear"], cfg["shear"])
    sc = u(cfg["scale_min"], cfg["scale_max"])
    tx = u(-cfg["translate"], cfg["translate"])
    ty = u(-cfg["translate"], cfg["translate"])
    theta = affine_theta(ang, sh, sc, tx, ty, w / h)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # erase a vertical band (a share of the batch): the network must recognise the writer from part of the
    # signature, not only from its whole outline (random erasing; half of the images in the default config)
    if cfg.get("erase_p", 0.0) > 0:
        width = u(0.15, cfg.get("erase_max", 0.4)) * w
        x0 = torch.rand(b, generator=gen) * (w - width)
        cols = torch.arange(w, dtype=x.dtype).view(1, w)
        band = (cols >= x0.view(b, 1)) & (cols < (x0 + width).view(b, 1))
        sel = (torch.rand(b, generator=gen) < cfg["erase_p"]).view(b, 1)
        x = x.masked_fill((band & sel).view(b, 1, 1, w), 0.0)

    # blur a share of the batch
    if cfg["blur_p"] > 0:
        k = torch.tensor([0.25, 0.5, 0.25])
        ker = (k[:, None] * k[None, :]).view(1, 1, 3, 3)
        blurred = F.conv2d(x, ker, padding=1)
        sel = (torch.rand(b, generator=gen) < cfg["blur_p"]).view(b, 1, 1, 1)
        x = torch.where(sel, blurred, x)

    # ink strength gain and noise on the ink
    gain = u(cfg["ink_gain_min"], cfg["ink_gain_max"]).view(b, 1, 1, 1)
    ink = (x > 0.02).float()
    noise = torch.randn(x.shape, generator=gen) * cfg["noise_std"]
    x = x * gain + noise * ink
    # faint specks on the background for a share of the batch (scanner dust that survived cleaning)
    specks = (torch.rand(x.shape, generator=gen) < 0.0015).float() * u(0.1, 0.6).view(b, 1, 1, 1)
    sel = (torch.rand(b, generator=gen) < cfg["speck_p"]).view(b, 1, 1, 1)
    x = x + torch.where(sel, specks, torch.zeros_like(specks))
    return x.clamp_(0.0, 1.0)
