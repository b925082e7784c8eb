"""Training the camera-style StarGAN: one discriminator step per iteration, one generator
step every ``n_critic`` iterations (StarGAN's counting, so ``iters`` = discriminator steps)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.core.datasets import UnlabelledSample
from training.core.errors import ReIDError
from training.stargan.checkpoint import CHECKPOINT_NAME, StarGANCheckpoint, load_stargan, save_stargan
from training.stargan.data import CameraImage, CameraImages, count_cameras
from training.stargan.losses import camera_classification_loss, critic_loss, gradient_penalty, reconstruction_loss
from training.stargan.model import Discriminator, Generator, StarGANConfig


@dataclass(frozen=True)
class TrainConfig:
    """The StarGAN recipe; defaults are StarGAN's (and HHL's, which trains ~220k iterations)."""

    iters: int = 200_000
    batch_size: int = 16
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 5
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    decay_from: float = 0.5  # learning rates fall linearly to 0 over the last half
    checkpoint_every: int = 10_000
    seed: int = 0
    workers: int = 2

    def validate(self) -> None:
        """Raise ReIDError naming the first unusable value."""
        if self.iters < 1 or self.batch_size < 1 or self.n_critic < 1 or self.checkpoint_every < 1:
            raise ReIDError(
                "iters, batch size, n_critic and checkpoint interval must be >= 1, got "
                f"{self.iters}, {self.batch_size}, {self.n_critic}, {self.checkpoint_every}"
            )
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise ReIDError(f"learning rates must be > 0, got {self.lr_g} and {self.lr_d}")
        if not 0.0 <= self.decay_from <= 1.0:
            raise ReIDError(f"decay_from must be a fraction of the run in [0, 1], got {self.decay_from}")
        if self.workers < 0:
            raise ReIDError(f"workers must be >= 0, got {self.workers}")


def lr_factor(iteration: int, iters: int, decay_from: float) -> float:
    """1 until ``decay_from * iters``, then linear down to 1/(remaining steps) at the last one.

    A pure function of the iteration, so a resumed run continues the same schedule.
    """
    start = int(decay_from * iters)
    if iteration < start:
        return 1.0
    return (iters - iteration) / (iters - start)


class TrainSummary(NamedTuple):
    checkpoint: Path
    start_iteration: int
    iteration: int
    seconds: float
    metrics: dict[str, float]


def _batches(loader: DataLoader[CameraImage]) -> Iterator[CameraImage]:
    for _ in itertools.count():
        yield from loader


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class DiscriminatorLosses(NamedTuple):
    """The unweighted terms of one discriminator step, as plain floats."""

    d_adv: float
    d_cls: float
    d_gp: float


class GeneratorLosses(NamedTuple):
    """The unweighted terms of one generator step, as plain floats."""

    g_adv: float
    g_cls: float
    g_rec: float


def discriminator_step(
    generator: Generator,
    discriminator: Discriminator,
    optimizer: torch.optim.Optimizer,
    real: Tensor,
    camids: Tensor,
    target: Tensor,
    *,
    lambda_cls: float,
    lambda_gp: float,
) -> DiscriminatorLosses:
    """One update of ``discriminator``: real vs translated patches, the camera of real images,
    and the gradient penalty.

    ``real`` (B, 3, H, W) in [-1, 1]; ``camids`` (B,) the cameras they were taken with and
    ``target`` (B,) the cameras to translate to, both 0-based int64. The generator only
    translates (no gradient reaches it).
    """
    fake = generator(real, target).detach()
    out_real, out_fake = discriminator(real), discriminator(fake)
    d_adv = critic_loss(out_real.patch, out_fake.patch)
    d_cls = camera_classification_loss(out_real.logits, camids)
    d_gp = gradient_penalty(lambda x: discriminator(x).patch, real, fake)
    d_loss = d_adv + lambda_cls * d_cls + lambda_gp * d_gp
    optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    optimizer.step()
    return DiscriminatorLosses(d_adv=d_adv.item(), d_cls=d_cls.item(), d_gp=d_gp.item())


def generator_step(
    generator: Generator,
    discriminator: Discriminator,
    optimizer: torch.optim.Optimizer,
    real: Tensor,
    camids: Tensor,
    target: Tensor,
    *,
    lambda_cls: float,
    lambda_rec: float,
) -> GeneratorLosses:
    """One update of ``generator``: fool the critic, be classified as the ``target`` camera, and
    translate back to ``camids`` (cycle consistency). Tensors as in :func:`discriminator_step`.

    The discriminator is frozen for the step (its weights get no gradient) and unfrozen after.
    """
    discriminator.requires_grad_(False)
    try:
        fake = generator(real, target)
        out_fake = discriminator(fake)
        g_adv = -out_fake.patch.mean()
        g_cls = camera_classification_loss(out_fake.logits, target)
        g_rec = reconstruction_loss(real, generator(fake, camids))
        g_loss = g_adv + lambda_cls * g_cls + lambda_rec * g_rec
        optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        optimizer.step()
    finally:
        discriminator.requires_grad_(True)
    return GeneratorLosses(g_adv=g_adv.item(), g_cls=g_cls.item(), g_rec=g_rec.item())


def _camera_loader(
    samples: Sequence[UnlabelledSample], image_size: tuple[int, int], config: TrainConfig, start: int
) -> DataLoader[CameraImage]:
    """Shuffled, flipped batches, reseeded from the start iteration so that a resumed run draws
    fresh (not repeated) batches."""
    torch.manual_seed(config.seed + start)
    return DataLoader(
        CameraImages(samples, image_size, flip=True),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(samples) >= config.batch_size,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
        generator=torch.Generator().manual_seed(config.seed + start),
    )


def _restore(
    path: Path,
    model_config: StarGANConfig,
    generator: Generator,
    discriminator: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> int:
    """Load the run at ``path`` into the networks and optimisers; its iteration."""
    state = load_stargan(path)
    if state.model_config != model_config:
        raise ReIDError(f"{path} was trained with {state.model_config}, not {model_config}: start a new --out")
    generator.load_state_dict(state.generator)
    discriminator.load_state_dict(state.discriminator)
    if state.g_optimizer and state.d_optimizer:
        opt_g.load_state_dict(state.g_optimizer)
        opt_d.load_state_dict(state.d_optimizer)
    return state.iteration


def train_stargan(
    samples: Sequence[UnlabelledSample],
    model_config: StarGANConfig,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    device: torch.device,
    resume: bool = False,
    max_seconds: float | None = None,
    data_info: dict[str, object] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainSummary:
    """Train (or, with ``resume``, continue) a StarGAN on ``samples``; checkpoint to
    ``run_dir/stargan.pt`` every ``checkpoint_every`` iterations and at the end.

    ``max_seconds`` stops early (with a checkpoint) once that much wall time has passed; the
    learning-rate schedule still spans ``config.iters``, so a later ``resume`` carries on.

    ReIDError when the cameras in the data do not match ``model_config.num_cameras``, when
    ``run_dir`` already holds a checkpoint and ``resume`` is off, or when resuming a run whose
    architecture differs.
    """
    config.validate()
    model_config.validate()
    num_cameras = count_cameras(samples)
    if num_cameras != model_config.num_cameras:
        raise ReIDError(f"the data has {num_cameras} cameras but the StarGAN is built for {model_config.num_cameras}")
    path = Path(run_dir) / CHECKPOINT_NAME
    if path.exists() and not resume:
        raise ReIDError(f"{path} already exists: pass --resume to continue that run, or choose a new --out")

    torch.manual_seed(config.seed)  # initial weights
    generator, discriminator = Generator(model_config).to(device), Discriminator(model_config).to(device)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    start = 0
    if resume:
        start = _restore(path, model_config, generator, discriminator, opt_g, opt_d)
        log(f"resuming {path} at iteration {start}")
    if start >= config.iters:
        log(f"{path} is at iteration {start} >= --iters {config.iters}: nothing to train")
        return TrainSummary(path, start, start, 0.0, {})
    batches = _batches(_camera_loader(samples, model_config.image_size, config, start))

    def checkpoint(iteration: int, metrics: dict[str, float]) -> None:
        save_stargan(
            path,
            StarGANCheckpoint(
                model_config=model_config,
                generator=generator.state_dict(),
                discriminator=discriminator.state_dict(),
                iteration=iteration,
                g_optimizer=opt_g.state_dict(),
                d_optimizer=opt_d.state_dict(),
                train_config=asdict(config),
                metrics=metrics,
                data=dict(data_info or {}),
            ),
        )

    generator.train()
    discriminator.train()
    metrics: dict[str, float] = {}
    began = time.perf_counter()
    bar = tqdm(range(start, config.iters), initial=start, total=config.iters, desc="stargan", unit="it", disable=not progress)
    for iteration in bar:
        factor = lr_factor(iteration, config.iters, config.decay_from)
        _set_lr(opt_g, config.lr_g * factor)
        _set_lr(opt_d, config.lr_d * factor)
        batch = next(batches)
        real, camids = batch.image.to(device), batch.camid.to(device)
        # Targets uniform over cameras (StarGAN permutes the batch's labels): rare cameras
        # are translated to as often as common ones.
        target = torch.randint(num_cameras, camids.shape, device=device)
        d_losses = discriminator_step(
            generator, discriminator, opt_d, real, camids, target, lambda_cls=config.lambda_cls, lambda_gp=config.lambda_gp
        )
        metrics.update(d_losses._asdict())
        if (iteration + 1) % config.n_critic == 0:
            g_losses = generator_step(
                generator, discriminator, opt_g, real, camids, target, lambda_cls=config.lambda_cls, lambda_rec=config.lambda_rec
            )
            metrics.update(g_losses._asdict())
            bar.set_postfix(d_cls=f"{d_losses.d_cls:.3f}", g_cls=f"{g_losses.g_cls:.3f}", g_rec=f"{g_losses.g_rec:.3f}")

        out_of_time = max_seconds is not None and time.perf_counter() - began >= max_seconds
        if (iteration + 1) % config.checkpoint_every == 0 or iteration + 1 == config.iters or out_of_time:
            checkpoint(iteration + 1, dict(metrics))
        if out_of_time:
            log(f"time budget of {max_seconds:.0f} s used up at iteration {iteration + 1} of {config.iters}")
            break
    bar.close()
    seconds = time.perf_counter() - began
    return TrainSummary(path, start, iteration + 1, seconds, dict(metrics))
