"""Classification losses shared by DenseNet121 and the PRM (paper 2.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ordinal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Paper eq. 2: cross-entropy plus alpha * (E[y_hat] - y)^2 under the softmax over grades."""
    ce = F.cross_entropy(logits, target, weight=weight)
    grades = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
    expected = (logits.softmax(dim=1) * grades).sum(dim=1)
    return ce + alpha * (expected - target.to(logits.dtype)).pow(2).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss (Lin et al. 2020) over class logits: down-weights examples already classified well."""
    log_p = F.log_softmax(logits, dim=1)
    log_pt = log_p.gather(1, target[:, None]).squeeze(1)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    if weight is not None:
        loss = loss * weight[target]
        return loss.sum() / weight[target].sum()
    return loss.mean()


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over the classes present) against class imbalance."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    present = counts > 0
    return weights / weights[present].mean()
