"""Losses: batch-hard triplet against a brute-force loop, pseudo-identities, the UDA total."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    BatchHardTripletLoss,
    CrossEntropyLabelSmooth,
    DomainConnectivityLoss,
    UDALoss,
    target_pseudo_labels,
)
from training.model import ModelConfig, ReIDModel


def brute_force_batch_hard(emb: torch.Tensor, pids: list[int], margin: float) -> tuple[float, int]:
    """Per-anchor loops, exactly as the paper defines batch-hard mining."""
    hinges = []
    n = len(pids)
    for a in range(n):
        positives = [math.dist(emb[a].tolist(), emb[p].tolist()) for p in range(n) if p != a and pids[p] == pids[a]]
        negatives = [math.dist(emb[a].tolist(), emb[q].tolist()) for q in range(n) if pids[q] != pids[a]]
        if positives and negatives:
            hinges.append(max(0.0, max(positives) - min(negatives) + margin))
    return (sum(hinges) / len(hinges) if hinges else 0.0), len(hinges)


@pytest.mark.parametrize("seed", range(5))
def test_batch_hard_matches_brute_force(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(4, 20, (1,), generator=gen))
    pids = torch.randint(0, 5, (n,), generator=gen)  # some ids appear once: no positive
    emb = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    expected, anchors = brute_force_batch_hard(emb, pids.tolist(), margin=0.5)
    result = BatchHardTripletLoss(margin=0.5)(emb, pids)
    assert result.num_anchors == anchors
    assert result.loss.item() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert 0.0 <= result.active_fraction <= 1.0


def test_batch_hard_without_any_triplet_is_zero_and_differentiable() -> None:
    emb = torch.randn(4, 3, requires_grad=True)
    result = BatchHardTripletLoss()(emb, torch.zeros(4, dtype=torch.int64))  # no negatives
    result.loss.backward()
    assert result.loss.item() == 0.0 and result.num_anchors == 0
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_batch_hard_with_identical_embeddings_has_finite_gradient() -> None:
    emb = torch.ones(6, 4, requires_grad=True)  # every distance is 0
    result = BatchHardTripletLoss(margin=0.5)(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
    result.loss.backward()
    assert result.loss.item() == pytest.approx(0.5, abs=1e-5)
    assert torch.isfinite(emb.grad).all()


def test_cross_entropy_label_smoothing() -> None:
    logits = torch.randn(5, 4)
    pids = torch.tensor([0, 3, 1, 1, 2])
    torch.testing.assert_close(CrossEntropyLabelSmooth(0.0)(logits, pids), F.cross_entropy(logits, pids))
    eps = 0.1
    target = torch.full((5, 4), eps / 4).scatter_(1, pids[:, None], 1 - eps + eps / 4)
    manual = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(CrossEntropyLabelSmooth(eps)(logits, pids), manual)


def test_pseudo_labels_group_each_image_with_its_camera_styles() -> None:
    # Three originals (dataset indices 40, 7, 12), each followed by two camera-style copies.
    groups = torch.tensor([40, 40, 40, 7, 7, 7, 12, 12, 12])
    labels = target_pseudo_labels(groups, offset=100)
    assert labels.tolist() == [102, 102, 102, 100, 100, 100, 101, 101, 101]


@pytest.mark.parametrize("seed", range(20))
def test_pseudo_labels_never_collide_with_source_ids(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    num_source_ids = int(torch.randint(1, 50, (1,), generator=gen))
    source_pids = torch.randint(0, num_source_ids, (int(torch.randint(1, 30, (1,), generator=gen)),), generator=gen)
    num_targets = int(torch.randint(1, 20, (1,), generator=gen))
    views = int(torch.randint(1, 9, (1,), generator=gen))
    groups = torch.randint(0, 10_000, (num_targets,), generator=gen).repeat_interleave(views)
    for offset in (num_source_ids, int(source_pids.max()) + 1):
        labels = target_pseudo_labels(groups, offset)
        assert not set(labels.tolist()) & set(source_pids.tolist())
        # Same pseudo-id exactly when same original image.
        assert torch.equal(labels[:, None] == labels[None, :], groups[:, None] == groups[None, :])


def test_domain_loss_treats_source_and_target_as_negatives() -> None:
    # Target images sit exactly on top of source images of pid 1 and 2 (same pid values as
    # the target groups): they must still be negatives, so the loss sees zero-distance negatives.
    source = torch.tensor([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0], [5.0, 0.1]])
    source_pids = torch.tensor([1, 1, 2, 2])
    target = source.clone()
    target_groups = torch.tensor([1, 1, 2, 2])
    result = DomainConnectivityLoss(margin=0.5)(source, source_pids, target, target_groups)
    pseudo = target_pseudo_labels(target_groups, offset=3)
    expected = BatchHardTripletLoss(0.5)(torch.cat([source, target]), torch.cat([source_pids, pseudo]))
    assert result.loss.item() == pytest.approx(expected.loss.item())
    assert result.loss.item() == pytest.approx(0.1 + 0.5, abs=1e-4)  # hardest positive 0.1, hardest negative 0
    assert result.num_anchors == 8


def small_model(use_local: bool = True) -> ReIDModel:
    torch.manual_seed(0)
    config = ModelConfig(
        num_classes=4, backbone="resnet18", height=128, width=64, fc_dim=32, embed_dim=8,
        lstm_hidden=8, use_local=use_local,
    )
    return ReIDModel(config).train()


def uda_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    source_pids = torch.tensor([0, 0, 3, 3])  # P=2 ids x K=2 images
    target_groups = torch.tensor([0, 0, 0, 1, 1, 1])  # 2 target images x (1 + 2 camera styles)
    return torch.rand(4, 3, 128, 64), source_pids, torch.rand(6, 3, 128, 64), target_groups


def test_total_loss_reaches_every_parameter_of_both_branches() -> None:
    net = small_model()
    source_images, source_pids, target_images, target_groups = uda_batch()
    terms = UDALoss(theta=0.3)(net(source_images), source_pids, net(target_images), target_groups)
    terms.total.backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def hand_batch_hard(emb: torch.Tensor, labels: list[int], margin: float = 0.5) -> torch.Tensor:
    return torch.tensor(brute_force_batch_hard(emb, labels, margin)[0])


def test_default_total_is_eq4_computed_by_hand() -> None:
    """L = sum over branches of CE + 0.3 * L_D, L_D one triplet over source + target groups."""
    net = small_model()
    source_images, source_pids, target_images, target_groups = uda_batch()
    with torch.no_grad():
        src, tgt = net(source_images), net(target_images)
        terms = UDALoss()(src, source_pids, tgt, target_groups)
    # source pids 0 and 3, so target groups 0, 1 become classes 4, 5: disjoint from every source class
    labels = source_pids.tolist() + [4 + g for g in target_groups.tolist()]
    expected = torch.zeros(())
    for logits, s_emb, t_emb in ((src.global_logits, src.global_embed, tgt.global_embed),
                                 (src.local_logits, src.local_embed, tgt.local_embed)):
        ce = -F.log_softmax(logits, dim=1)[torch.arange(len(source_pids)), source_pids].mean()
        expected = expected + ce + 0.3 * hand_batch_hard(torch.cat([s_emb, t_emb]), labels)
    torch.testing.assert_close(terms.total, expected, rtol=1e-5, atol=1e-5)
    assert all(float(t) > 0 for t in (terms.ce_global, terms.ce_local, terms.domain_global, terms.domain_local))
    assert float(terms.tri_source_global) > 0  # logged, but not in the default total


def test_source_triplet_weight_adds_a_separate_source_triplet() -> None:
    net = small_model()
    source_images, source_pids, target_images, target_groups = uda_batch()
    with torch.no_grad():
        src, tgt = net(source_images), net(target_images)
        eq4 = UDALoss()(src, source_pids, tgt, target_groups)
        both = UDALoss(source_triplet_weight=1.0)(src, source_pids, tgt, target_groups)
    by_hand = sum(hand_batch_hard(e, source_pids.tolist()) for e in (src.global_embed, src.local_embed))
    torch.testing.assert_close(both.total - eq4.total, by_hand, rtol=1e-5, atol=1e-5)


def test_source_only_l_d_is_the_source_triplet() -> None:
    net = small_model()
    source_images, source_pids, _, _ = uda_batch()
    with torch.no_grad():
        src = net(source_images)
        terms = UDALoss(theta=0.3)(src, source_pids)
    torch.testing.assert_close(terms.domain_global, hand_batch_hard(src.global_embed, source_pids.tolist()))
    torch.testing.assert_close(terms.total, terms.ce_global + terms.ce_local + 0.3 * (
        terms.domain_global + terms.domain_local))


def test_source_only_and_no_local_modes() -> None:
    source_images, source_pids, _, _ = uda_batch()
    net = small_model()
    source_only = UDALoss()(net(source_images), source_pids)
    assert source_only.domain_global.item() > 0 and source_only.domain_local.item() > 0
    assert source_only.ce_local.item() > 0

    global_only = small_model(use_local=False)
    terms = UDALoss()(global_only(source_images), source_pids)
    assert terms.ce_local.item() == 0.0 and terms.tri_source_local.item() == 0.0 and terms.domain_local.item() == 0.0
    terms.total.backward()  # the global branch still trains
    assert global_only.global_head.classifier.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="together"):
        UDALoss()(net(source_images), source_pids, target_groups=torch.tensor([0, 0]))
