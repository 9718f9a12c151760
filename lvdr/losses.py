"""Classification losses shared by DenseNet121 and the PRM (paper 2.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lvdr.distributed import batch_mean


def ordinal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, weight: torch.Tensor | None = None,
                 reduction: str = "mean") -> torch.Tensor:
    """Paper eq. 2: cross-entropy plus alpha * (E[y_hat] - y)^2 under the softmax over grades. With
    ``reduction="none"`` each example's loss, its cross-entropy scaled by its class weight (as
    F.cross_entropy does), for callers that weigh examples themselves."""
    grades = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
    expected = (logits.softmax(dim=1) * grades).sum(dim=1)
    squared = (expected - target.to(logits.dtype)).pow(2)
    if reduction == "none":
        return F.cross_entropy(logits, target, weight=weight, reduction="none") + alpha * squared
    return cross_entropy(logits, target, weight) + alpha * batch_mean(squared)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """F.cross_entropy's (class-weighted) mean, taken with ``batch_mean`` so that it is over the global batch
    in data-parallel training."""
    per_example = F.cross_entropy(logits, target, reduction="none")
    return batch_mean(per_example, None if weight is None else weight[target])


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """Focal loss (Lin et al. 2020) over class logits: down-weights examples already classified well.
    ``reduction="none"``: each example's loss, scaled by its class weight."""
    log_p = F.log_softmax(logits, dim=1)
    log_pt = log_p.gather(1, target[:, None]).squeeze(1)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    if reduction == "none":
        return loss if weight is None else loss * weight[target]
    return batch_mean(loss, None if weight is None else weight[target])


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over the classes present) against class imbalance."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    present = counts > 0
    return weights / weights[present].mean()
