"""The StarGAN objective (Choi et al. 2018) with the WGAN-GP adversarial loss (Gulrajani et al.
2017, "Improved Training of Wasserstein GANs").

    D: -D(x) + D(G(x, c')) + lambda_cls * CE(D_cls(x), c) + lambda_gp * GP
    G: -D(G(x, c')) + lambda_cls * CE(D_cls(G(x, c')), c') + lambda_rec * |x - G(G(x, c'), c)|_1

The weights are applied in the train step (training/stargan/trainer.py), not here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, alpha: Tensor | None = None
) -> Tensor:
    """WGAN-GP penalty: mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2.

    ``x_hat = alpha * real + (1 - alpha) * fake`` with one ``alpha`` ~ U[0, 1) per sample
    (``alpha`` (B,) may be given, for tests). A critic that returns a patch map is summed over
    its patches per sample, so the gradient is that of the sample's total score. ``real`` and
    ``fake`` (B, ...) of equal shape; the result is a differentiable scalar (create_graph), so
    the penalty trains the critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have one shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    alpha = alpha.reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - 1.0) ** 2).mean()


def camera_classification_loss(logits: Tensor, camids: Tensor) -> Tensor:
    """Softmax cross-entropy of camera logits (B, C) against camids (B,) int64 (one camera per
    image, so softmax rather than StarGAN's multi-label sigmoid for CelebA)."""
    return F.cross_entropy(logits, camids)


def reconstruction_loss(images: Tensor, reconstructed: Tensor) -> Tensor:
    """Cycle-consistency L1: mean |x - G(G(x, c'), c)| over pixels and channels."""
    return (images - reconstructed).abs().mean()


def critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Wasserstein critic loss -E[D(x)] + E[D(G(x))] over all patches."""
    return fake_scores.mean() - real_scores.mean()
