"""Loss terms shared by the tasks, each with the original's numerics.

Paper, equations 1-3: the penalty-reduced pixel-wise focal loss on the centre heat map
(``focal_loss``, alpha 2, beta 4, normalised by the number of objects), and L1 losses on the
size and offset regressions read at the object centres only (``reg_l1_loss``); the total is
``L_k + 0.1 L_size + L_off`` (each task's ``loss_weights``). Pose adds dense and
joint-weighted L1 terms; 3D adds the mean L1 (``l1_mean_loss``) and the two-bin orientation loss
(``bin_rot_loss``). Heat and regression maps are NCHW; ``ind = y * W + x`` indexes the
flattened output map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from centernet.tasks.decoding import gather_features


def clamped_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Sigmoid clamped to ``[1e-4, 1 - 1e-4]`` so the focal loss's logs stay finite."""
    return torch.clamp(x.sigmoid(), min=1e-4, max=1 - 1e-4)


def focal_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (CornerNet; alpha 2, beta 4).

    Positives are pixels where ``gt == 1``; negatives are down-weighted by ``(1 - gt)^4`` near
    the peaks. The sum is normalised by the number of positives over the whole batch, or, when
    the batch holds no positive at all, not normalised (the negative term alone).

    Args:
        pred: ``[B, C, H, W]`` probabilities in (0, 1) (see ``clamped_sigmoid``).
        gt: ``[B, C, H, W]`` target heat map in [0, 1].

    Returns:
        Scalar loss.
    """
    pos = gt.eq(1).float()
    neg = gt.lt(1).float()
    neg_weights = torch.pow(1 - gt, 4)

    pos_loss = (torch.log(pred) * torch.pow(1 - pred, 2) * pos).sum()
    neg_loss = (torch.log(1 - pred) * torch.pow(pred, 2) * neg_weights * neg).sum()
    num_pos = pos.sum()
    if num_pos == 0:
        return -neg_loss
    return -(pos_loss + neg_loss) / num_pos


def reg_l1_loss(output: torch.Tensor, mask: torch.Tensor, ind: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 regression at object centres, normalised by the number of regressed values.

    ``sum |pred - target| * mask / (mask.sum() * D + 1e-4)`` (the original's ``RegL1Loss``).

    Args:
        output: ``[B, D, H, W]`` raw regression map.
        mask: ``[B, M]`` 1 for real objects, 0 for padding.
        ind: ``[B, M]`` flat centre indices.
        target: ``[B, M, D]``.
    """
    pred = gather_features(output, ind)
    mask = mask.unsqueeze(2).expand_as(pred).float()
    loss = F.l1_loss(pred * mask, target * mask, reduction="sum")
    return loss / (mask.sum() + 1e-4)


def dense_l1_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 over whole maps weighted by ``mask`` (the original's ``--dense_wh`` size loss).

    ``sum |output * mask - target * mask| / (mask.sum() + 1e-4)``, all ``[B, D, H, W]``.
    """
    return F.l1_loss(output * mask, target * mask, reduction="sum") / (mask.sum() + 1e-4)


def reg_weighted_l1_loss(
    output: torch.Tensor, mask: torch.Tensor, ind: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """L1 regression with a per-coordinate mask (the original's ``RegWeightedL1Loss``).

    Args:
        output: ``[B, D, H, W]`` raw regression map.
        mask: ``[B, M, D]`` per-coordinate weights (0/1).
        ind: ``[B, M]`` flat centre indices.
        target: ``[B, M, D]``.
    """
    pred = gather_features(output, ind)
    mask = mask.float()
    loss = F.l1_loss(pred * mask, target * mask, reduction="sum")
    return loss / (mask.sum() + 1e-4)


def l1_mean_loss(output: torch.Tensor, mask: torch.Tensor, ind: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ddd L1 loss: masked ``|pred - target|`` averaged over ALL ``B * M * D`` entries.

    Unlike ``reg_l1_loss`` it is not normalised by the number of objects, so its scale depends on
    ``max_objects`` (the original's ``L1Loss``; kept for faithfulness of the loss weights).

    Args:
        output: ``[B, D, H, W]`` map; mask ``[B, M]``; ind ``[B, M]``; target ``[B, M, D]``.
    """
    pred = gather_features(output, ind)
    mask = mask.unsqueeze(2).expand_as(pred).float()
    return F.l1_loss(pred * mask, target * mask, reduction="mean")


def bin_rot_loss(
    output: torch.Tensor, mask: torch.Tensor, ind: torch.Tensor, rotbin: torch.Tensor, rotres: torch.Tensor
) -> torch.Tensor:
    """Two-bin orientation loss (the original's ``BinRotLoss``).

    Per bin: cross-entropy of the 2 bin logits (multiplied by the mask, so padding rows count as
    uniform logits in the mean over all ``B * M`` rows), plus smooth-L1 of ``(sin, cos)`` against
    the residual angle over the rows whose bin flag is set.

    Args:
        output: ``[B, 8, H, W]`` raw ``rot`` map ``[bin1 logits (2), sin1, cos1, bin2 logits (2), sin2, cos2]``.
        mask: ``[B, M]``; ind: ``[B, M]``; rotbin: ``[B, M, 2]`` int64; rotres: ``[B, M, 2]`` radians.
    """
    pred = gather_features(output, ind).reshape(-1, 8)
    bins = rotbin.reshape(-1, 2)
    residuals = rotres.reshape(-1, 2)
    row_mask = mask.reshape(-1, 1).float()
    loss = pred.new_zeros(())
    for b in range(2):
        logits = pred[:, 4 * b : 4 * b + 2] * row_mask
        loss = loss + F.cross_entropy(logits, bins[:, b], reduction="mean")
    for b in range(2):
        rows = bins[:, b].nonzero()[:, 0]
        if rows.numel() > 0:
            sin_cos = pred[rows, 4 * b + 2 : 4 * b + 4]
            angle = residuals[rows, b]
            loss = loss + F.smooth_l1_loss(sin_cos[:, 0], torch.sin(angle), reduction="mean")
            loss = loss + F.smooth_l1_loss(sin_cos[:, 1], torch.cos(angle), reduction="mean")
    return loss
