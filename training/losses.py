"""Metric-learning objectives. Embeddings are L2-normalised (B, D); labels (B,) from BatchSampler:
writer class c for genuine signatures, C + c for skilled forgeries of writer c."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _masks(labels: torch.Tensor, forged: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive pairs: two genuine signatures of one writer (not self). Negatives: everything else
    except two forgeries of the same writer (different forgers, no defined relation)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.numel(), dtype=torch.bool)
    genuine = ~forged
    pos = same & genuine[:, None] & genuine[None, :] & ~eye
    neg = ~same
    return pos, neg


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, forged: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on cosine distance, anchors = genuine signatures."""
    dist = 1.0 - emb @ emb.T
    pos, neg = _masks(labels, forged)
    anchors = pos.any(1)
    hardest_pos = (dist * pos).max(1).values
    hardest_neg = dist.masked_fill(~neg, 4.0).min(1).values
    loss = F.relu(hardest_pos - hardest_neg + margin)
    return loss[anchors].mean()


def contrastive_loss(emb: torch.Tensor, labels: torch.Tensor, forged: torch.Tensor, margin: float) -> torch.Tensor:
    """Classic contrastive loss over all pairs in the batch (Euclidean distance of unit vectors)."""
    d = torch.cdist(emb, emb).clamp_min(1e-9)
    pos, neg = _masks(labels, forged)
    lp = (d**2)[pos].mean()
    ln = (F.relu(2 * margin - d) ** 2)[neg].mean()  # margin in the same units as triplet (x2 for euclid)
    return lp + ln


class ArcFace(nn.Module):
    """Additive angular margin softmax (Deng et al. 2019) over writer classes and forgery-of classes."""

    def __init__(self, embed_dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)
        self.s, self.m = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = emb @ F.normalize(self.weight, dim=1).T
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        target = torch.cos(theta + self.m)
        # keep the margin monotonic past pi - m (standard easy-margin fallback)
        target = torch.where(theta < math.pi - self.m, target, cos - self.m * math.sin(self.m))
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        logits = torch.where(onehot, target, cos) * self.s
        return F.cross_entropy(logits, labels)


class DistillHead(nn.Module):
    """Maps the student's pooled features into a teacher's embedding space (a linear map, L2-normalised);
    used only in training, never exported."""

    def __init__(self, features: int, teacher_dim: int) -> None:
        super().__init__()
        self.map = nn.Linear(features, teacher_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.map(pooled), dim=1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine term, relational term) between L2-normalised student (mapped) and teacher embeddings (B, D).

    The cosine term pulls each student vector onto the teacher's; the relational term matches the batch's
    matrix of pairwise cosines (Park et al. 2019's distance-wise relational distillation, on cosines),
    which is what verification uses, off the diagonal."""
    cos = 1.0 - (student * teacher).sum(1).mean()
    off = ~torch.eye(student.shape[0], dtype=torch.bool)
    rel = ((student @ student.T - teacher @ teacher.T) ** 2)[off].mean()
    return cos, rel
