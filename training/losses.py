"""Losses of the UDA recipe: source cross-entropy and the domain-connectivity triplet L_D over
source images, target images and their camera-style images (the paper's Eq. 4):

    L = sum over branches (global, local) of
        CE(source) + theta * L_D(source ∪ target ∪ camera styles) [+ w * Triplet(source)]

The bracketed source triplet is an option (``source_triplet_weight``, default 0): Eq. 4 has only
L_cross and L_D, and source-source triplets are already inside L_D. See docs/model.md.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model import ReIDOutputs


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing (Szegedy et al. 2016, "Rethinking the Inception
    Architecture for Computer Vision"): the target is (1 - epsilon) * one-hot + epsilon / K.

    ``epsilon = 0`` is plain cross-entropy (the paper's setting).
    """

    def __init__(self, epsilon: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = epsilon

    def forward(self, logits: Tensor, pids: Tensor) -> Tensor:
        """logits (N, K) float, pids (N,) int64 in [0, K) -> scalar mean loss."""
        return F.cross_entropy(logits, pids, label_smoothing=self.epsilon)


class TripletResult(NamedTuple):
    loss: Tensor  # scalar; 0 (still differentiable) when no anchor is valid
    active_fraction: float  # valid anchors whose hinge is > 0
    num_anchors: int  # anchors with at least one positive and one negative in the batch
    mean_pos_dist: float  # mean hardest-positive distance over valid anchors
    mean_neg_dist: float  # mean hardest-negative distance over valid anchors


def pairwise_euclidean(x: Tensor) -> Tensor:
    """(N, D) -> (N, N) Euclidean distances.

    Squared distances are clamped at 1e-12 before the square root, so identical vectors give
    a zero gradient rather than NaN.
    """
    sq = x.pow(2).sum(dim=1)  # (N,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    return d2.clamp(min=1e-12).sqrt()


class BatchHardTripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans, Beyer and Leibe 2017, "In Defense of the Triplet Loss
    for Person Re-Identification").

    For every anchor: its farthest positive (same pid, another image) and its closest negative
    (different pid), in Euclidean distance, then ``max(0, d_ap - d_an + margin)``, averaged
    over anchors. An anchor with no positive or no negative in the batch has no triplet and is
    left out of the mean (it contributes neither loss nor gradient); if no anchor is left the
    loss is 0.
    """

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"triplet margin must be >= 0, got {margin}")
        self.margin = margin

    def forward(self, embeddings: Tensor, pids: Tensor) -> TripletResult:
        """embeddings (N, D) float, pids (N,) int64 -> :class:`TripletResult`."""
        if embeddings.dim() != 2 or pids.shape != (embeddings.shape[0],):
            raise ValueError(
                f"expected embeddings (N, D) and pids (N,), got {tuple(embeddings.shape)} and {tuple(pids.shape)}"
            )
        dist = pairwise_euclidean(embeddings)  # (N, N)
        same = pids[:, None] == pids[None, :]
        eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
        pos_mask = same & ~eye
        neg_mask = ~same
        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)  # (N,)
        if not bool(valid.any()):
            zero = embeddings.sum() * 0.0
            return TripletResult(zero, 0.0, 0, 0.0, 0.0)
        # Masked entries can never be chosen: -inf never wins a max, +inf never wins a min.
        d_ap = torch.where(pos_mask, dist, float("-inf")).amax(dim=1)[valid]  # (M,)
        d_an = torch.where(neg_mask, dist, float("inf")).amin(dim=1)[valid]  # (M,)
        hinge = F.relu(d_ap - d_an + self.margin)
        return TripletResult(
            loss=hinge.mean(),
            active_fraction=float((hinge > 0).float().mean()),
            num_anchors=int(valid.sum()),
            mean_pos_dist=float(d_ap.detach().mean()),
            mean_neg_dist=float(d_an.detach().mean()),
        )


def target_pseudo_labels(groups: Tensor, offset: int) -> Tensor:
    """Pseudo-identities for target images and their camera-style copies.

    ``groups`` (N,) int64 names, for every image, the original target image it comes from
    (the original and its C camera-style images share a value; any integers, e.g. dataset
    indices). Each distinct group becomes one class, numbered ``offset, offset + 1, ...`` in
    ascending group order, so with ``offset`` above every source pid no pseudo-identity can
    collide with a source identity. Returns (N,) int64.
    """
    if offset < 0:
        raise ValueError(f"pseudo-label offset must be >= 0, got {offset}")
    _, inverse = torch.unique(groups, return_inverse=True)
    return inverse.to(torch.int64) + offset


class DomainConnectivityLoss(nn.Module):
    """L_D: batch-hard triplet over source images, target images and their camera-style images
    (camera invariance + domain connectivity, after Zhong et al. 2018, "Generalizing a Person
    Retrieval Model Hetero- and Homogeneously", HHL).

    Source images keep their pids; each target group (an original and its camera-style
    images) is one pseudo-identity, numbered from ``max(source pid) + 1`` upwards, so a source
    image and a target image are always negatives and two target groups are negatives.
    """

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        self.triplet = BatchHardTripletLoss(margin)

    def forward(
        self, source_embed: Tensor, source_pids: Tensor,
        target_embed: Tensor | None = None, target_groups: Tensor | None = None,
    ) -> TripletResult:
        """source_embed (Ns, D), source_pids (Ns,), target_embed (Nt, D), target_groups (Nt,).

        Without a target batch the union is the source alone, and L_D is the source triplet.
        """
        if target_embed is None or target_groups is None:
            return self.triplet(source_embed, source_pids)
        offset = int(source_pids.max()) + 1 if source_pids.numel() else 0
        offset = max(offset, 0)
        labels = torch.cat([source_pids, target_pseudo_labels(target_groups, offset)])
        return self.triplet(torch.cat([source_embed, target_embed]), labels)


class UDALossTerms(NamedTuple):
    """Every term of one batch, each a scalar tensor; ``total`` is the one to backpropagate.

    ``tri_source_*`` (the source-only triplet) is always computed for the log, and enters
    ``total`` only with a non-zero ``source_triplet_weight``. Terms that do not apply (no local
    branch) are 0.
    """

    total: Tensor
    ce_global: Tensor
    ce_local: Tensor
    tri_source_global: Tensor
    tri_source_local: Tensor
    domain_global: Tensor
    domain_local: Tensor
    active_source_global: float  # fraction of source anchors with a positive hinge
    active_domain_global: float


class UDALoss(nn.Module):
    """Total loss of one batch, the paper's Eq. 4 summed over the global and the local branch:

        L = sum_b [ CE_b + theta * L_D,b + source_triplet_weight * Tri_b(source) ]

    L_D,b is one batch-hard triplet over the union of source images (their pids) and target
    images (one pseudo-identity per camera-style group). Without a target batch (source-only
    training) the union is the source alone, so L_D is the source triplet and source-only and
    UDA runs differ only in the target images. ``source_triplet_weight`` (default 0) adds a
    separate source triplet, the other reading of the paper's Section 2.4. A model built with
    ``use_local=False`` (empty ``local_*`` outputs) gets 0 for the local terms.
    """

    def __init__(
        self,
        theta: float = 0.3,
        margin: float = 0.5,
        label_smoothing: float = 0.0,
        source_triplet_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if theta < 0 or source_triplet_weight < 0:
            raise ValueError(f"theta and source_triplet_weight must be >= 0, got {theta}, {source_triplet_weight}")
        self.theta = theta
        self.source_triplet_weight = source_triplet_weight
        self.cross_entropy = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet = BatchHardTripletLoss(margin)
        self.domain = DomainConnectivityLoss(margin)

    def forward(
        self,
        source: ReIDOutputs,
        source_pids: Tensor,
        target: ReIDOutputs | None = None,
        target_groups: Tensor | None = None,
    ) -> UDALossTerms:
        """source: model outputs for Ns labelled images with ``source_pids`` (Ns,) int64 in
        [0, num_classes); target: outputs for Nt target images (originals and camera-style
        images) with ``target_groups`` (Nt,) naming each image's original."""
        if (target is None) != (target_groups is None):
            raise ValueError("target outputs and target_groups must be given together")
        zero = source.global_logits.sum() * 0.0
        use_local = source.local_logits.shape[1] > 0
        target_global = target.global_embed if target is not None else None
        target_local = target.local_embed if target is not None else None

        ce_global = self.cross_entropy(source.global_logits, source_pids)
        ce_local = self.cross_entropy(source.local_logits, source_pids) if use_local else zero
        tri_global = self.triplet(source.global_embed, source_pids)
        tri_local = self.triplet(source.local_embed, source_pids).loss if use_local else zero
        dom = self.domain(source.global_embed, source_pids, target_global, target_groups)
        domain_local = (
            self.domain(source.local_embed, source_pids, target_local, target_groups).loss if use_local else zero
        )

        total = (
            ce_global
            + ce_local
            + self.theta * (dom.loss + domain_local)
            + self.source_triplet_weight * (tri_global.loss + tri_local)
        )
        return UDALossTerms(
            total=total,
            ce_global=ce_global,
            ce_local=ce_local,
            tri_source_global=tri_global.loss,
            tri_source_local=tri_local,
            domain_global=dom.loss,
            domain_local=domain_local,
            active_source_global=tri_global.active_fraction,
            active_domain_global=dom.active_fraction,
        )
