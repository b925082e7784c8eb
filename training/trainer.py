"""The training run behind ``reid-train``: data, model, the loop, checkpoints and the log.

One step = one source P x K batch and (UDA mode) one target batch of T images with all their
camera-style images, forwarded together; the loss is :class:`training.losses.UDALoss`, the
paper's Eq. 4 (plus an optional separate source triplet, weight 0 by default):

    L = sum over branches (global, local) of CE + theta * L_D(source + target) [+ w * Tri(source)]

Checkpoints: ``last.pt`` every epoch; ``best.pt`` only with ``val_ids`` > 0, chosen on held-out
source identities. The target's query/gallery is evaluated for the report only and never
chooses anything. Epochs are 1-based; a checkpoint's ``epoch`` counts completed epochs. See
docs/training.md.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training import distributed
from training.camstyle_folder import CameraStyleGroup, find_camstyle_groups
from training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from training.data import SourceBatch, SourceImages, TargetBatch, TargetGroups, TargetStream, seed_epoch, source_loader
from training.core.datasets import ReIDDataset, load_dataset, load_unlabelled_images
from training.core.errors import ReIDError
from training.features import evaluate_model, metrics_record
from training.losses import UDALoss, UDALossTerms
from training.model import BACKBONES, EMBEDDING_KINDS, ModelConfig, ReIDModel, ReIDOutputs
from training.pretrained import load_backbone_weights
from training.runlog import RunLog
from training.transforms import train_transform
from training.validation import hold_out_source_ids

log = logging.getLogger(__name__)

MODES = ("uda", "source-only")
LAST, BEST, LOG = "last.pt", "best.pt", "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """The recipe of one run; stored in every checkpoint (``train_config``) for --resume."""

    source: str
    out: str
    target: str | None = None
    camstyle: str | None = None
    mode: str = "uda"
    use_local: bool = True
    use_camstyle: bool = True
    backbone: str = "resnet50"
    height: int = 256
    width: int = 128
    last_stride: int = 2
    pretrained: str = "imagenet"
    epochs: int = 30
    lr: float = 3e-4
    weight_decay: float = 5e-4
    margin: float = 0.5
    theta: float = 0.3
    source_triplet_weight: float = 0.0  # a separate source triplet on top of Eq. 4 (0 = Eq. 4)
    dropout: float = 0.5
    label_smoothing: float = 0.0
    p: int = 8  # source identities per batch
    k: int = 8  # images per source identity
    target_batch: int = 16  # target originals per batch, each with all its camera-style images
    max_steps_per_epoch: int | None = None
    eval_every: int = 5  # epochs; 0 = never (the last epoch is always evaluated otherwise)
    val_ids: int = 0  # source identities held out to choose best.pt on; 0 = keep only last.pt
    eval_embedding: str = "global"
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    log_every: int = 10  # steps between "step" records in log.jsonl

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ReIDError(f"--mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "uda" and not self.target:
            raise ReIDError("--target is required in --mode uda (the unlabelled domain)")
        if self.mode == "uda" and self.use_camstyle and not self.camstyle:
            raise ReIDError("--camstyle DIR is required in --mode uda (or pass --no-camstyle)")
        if self.eval_every > 0 and not self.target and self.val_ids == 0:
            raise ReIDError(
                "evaluation needs --target (its query/gallery) or --val-ids N; pass --eval-every 0 to train without"
            )
        if self.backbone not in BACKBONES:
            raise ReIDError(f"--backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.eval_embedding not in EMBEDDING_KINDS:
            raise ReIDError(f"--eval-embedding must be one of {EMBEDDING_KINDS}, got {self.eval_embedding!r}")
        positive = {"epochs": "--epochs", "p": "--ids-per-batch", "k": "--images-per-id",
                    "target_batch": "--target-batch", "eval_batch_size": "--eval-batch-size", "log_every": "--log-every"}
        for name, flag in positive.items():
            if getattr(self, name) < 1:
                raise ReIDError(f"{flag} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.margin < 0 or self.theta < 0 or self.weight_decay < 0 or self.source_triplet_weight < 0:
            raise ReIDError("--lr must be > 0 and --margin, --theta, --weight-decay, --source-triplet-weight >= 0")
        if self.workers < 0 or self.eval_every < 0 or self.val_ids < 0:
            raise ReIDError("--workers, --eval-every and --val-ids must be >= 0")
        if self.seed < 0:  # numpy's generators (the PK sampler's) take non-negative seeds only
            raise ReIDError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ReIDError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def model_config(self, num_classes: int) -> ModelConfig:
        return ModelConfig(
            num_classes=num_classes, backbone=self.backbone, last_stride=self.last_stride,
            height=self.height, width=self.width, dropout=self.dropout, use_local=self.use_local,
        )


class TrainData(NamedTuple):
    source: DataLoader  # P x K SourceBatch, batch_sampler is a PKSampler
    target: TargetStream | None  # endless TargetBatch stream (uda mode)
    eval_set: ReIDDataset | None  # the target's query/gallery: reported, never used to choose
    val_set: ReIDDataset | None  # held-out source identities (--val-ids): chooses best.pt
    num_classes: int


class TrainResult(NamedTuple):
    epochs: int  # completed epochs
    last: Path
    best: Path | None  # chosen on held-out source identities; None without --val-ids
    best_val_mAP: float | None  # held-out source mAP of ``best``
    metrics: dict[str, Any]  # the last evaluation ({"target": ..., "source_val": ...}), {} when none ran


def resume_config(out: str | Path, **overrides: Any) -> TrainConfig:
    """The recipe stored in ``OUT/last.pt`` (so --resume continues the same run), with
    ``overrides`` for what does not change the run's result (device, workers)."""
    stored = load_checkpoint(Path(out) / LAST).train_config
    return TrainConfig.from_dict({**stored, **overrides, "out": str(out)})


def target_groups(config: TrainConfig) -> list[CameraStyleGroup]:
    """Target originals with their camera-style images (or alone, with --no-camstyle)."""
    targets = load_unlabelled_images(config.target)
    if not config.use_camstyle:
        return [CameraStyleGroup((t.path,), t.camid) for t in targets]
    return find_camstyle_groups(targets, config.camstyle)


def build_data(config: TrainConfig, runtime: distributed.Runtime) -> TrainData:
    source = load_dataset(config.source)
    split = hold_out_source_ids(source, config.val_ids)
    augment = train_transform(config.height, config.width)
    source_batches = source_loader(
        SourceImages(split.train, augment), config.p, config.k,
        seed=config.seed, workers=config.workers, max_batches=config.max_steps_per_epoch,
    )
    target = None
    if config.mode == "uda":
        target = TargetStream(
            TargetGroups(target_groups(config), augment), config.target_batch, seed=config.seed,
            workers=config.workers, num_replicas=runtime.world_size, rank=runtime.rank,
        )
    eval_set = load_dataset(config.target) if config.eval_every > 0 and config.target else None
    val_set = split.val if config.eval_every > 0 else None
    return TrainData(source_batches, target, eval_set, val_set, split.num_train_pids)


def split_outputs(outputs: ReIDOutputs, n: int) -> tuple[ReIDOutputs, ReIDOutputs]:
    """The first ``n`` rows (source) and the rest (target) of every output field."""
    return ReIDOutputs(*(o[:n] for o in outputs)), ReIDOutputs(*(o[n:] for o in outputs))


def train_step(
    net: torch.nn.Module, loss_fn: UDALoss, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    source: SourceBatch, target: TargetBatch | None, device: torch.device,
) -> UDALossTerms:
    """One optimiser step on a source batch and an optional target batch.

    Source and target go through one forward (DDP allows one forward per backward), so
    BatchNorm sees both domains in each batch.
    """
    images = source.images if target is None else torch.cat([source.images, target.images])
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        outputs = net(images.to(device, non_blocking=True))
    outputs = ReIDOutputs(*(o.float() for o in outputs))  # losses in float32
    src, tgt = split_outputs(outputs, len(source.images))
    terms = loss_fn(
        src, source.pids.to(device),
        tgt if target is not None else None, target.groups.to(device) if target is not None else None,
    )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms.total).backward()
    scaler.step(optimizer)
    scaler.update()
    return terms


_TERMS = ("total", "ce_global", "ce_local", "tri_source_global", "tri_source_local", "domain_global", "domain_local")


def _as_floats(terms: UDALossTerms) -> dict[str, float]:
    values = {name: float(getattr(terms, name).detach()) for name in _TERMS}
    values["active_source_global"] = terms.active_source_global
    values["active_domain_global"] = terms.active_domain_global
    return values


def run_epoch(
    net: torch.nn.Module, loss_fn: UDALoss, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    data: TrainData, epoch: int, config: TrainConfig, runtime: distributed.Runtime, runlog: RunLog | None,
) -> dict[str, float]:
    """Train one epoch; returns the mean of every loss term and the images/s of all processes."""
    net.train()
    steps = len(data.source.batch_sampler)
    targets = iter(data.target) if data.target is not None else None
    sums: dict[str, float] = {}
    images, start = 0, time.perf_counter()
    bar = tqdm(data.source, total=steps, desc=f"epoch {epoch}/{config.epochs}", disable=not runtime.is_main)
    for step, source in enumerate(bar, start=1):
        target = next(targets) if targets is not None else None
        values = _as_floats(train_step(net, loss_fn, optimizer, scaler, source, target, runtime.device))
        sums = {k: sums.get(k, 0.0) + v for k, v in values.items()}
        images += (len(source.images) + (len(target.images) if target is not None else 0)) * runtime.world_size
        rate = images / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{values['total']:.3f}", img_s=f"{rate:.1f}")
        if runlog is not None and (step % config.log_every == 0 or step == steps):
            runlog.write("step", epoch=epoch, step=step, **values)
    means = {k: v / steps for k, v in sums.items()}
    return {**means, "images_per_s": images / (time.perf_counter() - start), "steps": steps}


LAST_EPOCH, BEST_SOURCE_VAL = "last epoch", "best held-out source mAP"


def _checkpoint(model: ReIDModel, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                epoch: int, config: TrainConfig, metrics: dict[str, Any], best_val: float | None,
                rule: str) -> Checkpoint:
    selection: dict[str, Any] = {"rule": rule}
    if rule == BEST_SOURCE_VAL:
        selection.update(val_mAP=best_val, val_ids=config.val_ids)
    return Checkpoint(
        model.config, model.state_dict(), epoch=epoch, train_config=config.to_dict(), metrics=metrics,
        optimizer_state=optimizer.state_dict(), extra={"scaler": scaler.state_dict(), "best_val_mAP": best_val},
        selection=selection,
    )


def _eval_metrics(model: ReIDModel, dataset: ReIDDataset, config: TrainConfig, device: torch.device) -> dict[str, Any]:
    result = evaluate_model(
        model, dataset, embedding=config.eval_embedding, batch_size=config.eval_batch_size, device=device
    )
    return {**metrics_record(result), "embedding": config.eval_embedding}


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Run (or with ``resume`` continue from OUT/last.pt) the training described by ``config``."""
    runtime = distributed.start(config.device)
    try:
        return _train(config, runtime, resume)
    finally:
        distributed.stop(runtime)


def _train(config: TrainConfig, runtime: distributed.Runtime, resume: bool) -> TrainResult:
    out = Path(config.out)
    if not resume and (out / LAST).exists():
        raise ReIDError(f"{out} already holds a run ({LAST}); pass --resume to continue it or choose another --out")
    log.info("training on %s (%d process%s)", runtime.device, runtime.world_size, "es" * runtime.distributed)
    data = build_data(config, runtime)
    torch.manual_seed(config.seed)  # the initial weights (DDP then copies rank 0's to every rank)
    model = ReIDModel(config.model_config(data.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.device.type == "cuda")  # mixed precision on CUDA
    done, best_val, metrics = 0, None, {}
    if resume:
        ckpt = load_checkpoint(out / LAST)
        model.load_state_dict(ckpt.model_state)
        model.to(runtime.device)  # before the optimiser state, which follows its parameters' device
        optimizer.load_state_dict(ckpt.optimizer_state)
        if ckpt.extra.get("scaler"):  # a CPU run's scaler is disabled and saves nothing
            scaler.load_state_dict(ckpt.extra["scaler"])
        done, best_val, metrics = ckpt.epoch, ckpt.extra.get("best_val_mAP"), ckpt.metrics.get("eval", {})
        log.info("resuming %s after epoch %d of %d", out / LAST, done, config.epochs)
    else:
        load_backbone_weights(model, config.pretrained)  # raises when asked-for weights are absent
    model.to(runtime.device)
    net = DistributedDataParallel(model) if runtime.distributed else model
    loss_fn = UDALoss(theta=config.theta, margin=config.margin, label_smoothing=config.label_smoothing,
                      source_triplet_weight=config.source_triplet_weight)
    runlog = None
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        runlog = RunLog(out / LOG)
        runlog.truncate_after(done)
        if not resume:
            runlog.write("start", epoch=0, config=config.to_dict(), device=str(runtime.device),
                         world_size=runtime.world_size, num_classes=data.num_classes)

    for epoch in range(done + 1, config.epochs + 1):
        seed_epoch(config.seed, epoch, runtime.rank, [data.source] + ([data.target.loader] if data.target else []))
        data.source.batch_sampler.set_epoch(epoch)
        if data.target is not None:
            data.target.set_epoch(epoch)
        losses = run_epoch(net, loss_fn, optimizer, scaler, data, epoch, config, runtime, runlog)
        due = config.eval_every > 0 and (epoch % config.eval_every == 0 or epoch == config.epochs)
        if runtime.is_main:
            runlog.write("epoch", epoch=epoch, **losses)
            if due:
                metrics = _evaluate(model, data, config, runtime.device, epoch, runlog)
            improved = due and data.val_set is not None and (
                best_val is None or metrics["source_val"]["mAP"] > best_val)
            best_val = metrics["source_val"]["mAP"] if improved else best_val
            record = {"losses": losses, "eval": metrics}
            save_checkpoint(out / LAST, _checkpoint(model, optimizer, scaler, epoch, config, record, best_val, LAST_EPOCH))
            if improved:
                ckpt = _checkpoint(model, optimizer, scaler, epoch, config, record, best_val, BEST_SOURCE_VAL)
                save_checkpoint(out / BEST, ckpt)
        distributed.barrier(runtime)  # the other processes wait for evaluation and the checkpoint

    best = out / BEST if (out / BEST).exists() else None
    return TrainResult(config.epochs, out / LAST, best, best_val, metrics)


def _evaluate(model: ReIDModel, data: TrainData, config: TrainConfig, device: torch.device, epoch: int,
              runlog: RunLog) -> dict[str, Any]:
    """Held-out source metrics (they choose best.pt) and target metrics (reported only)."""
    metrics: dict[str, Any] = {}
    if data.val_set is not None:
        metrics["source_val"] = _eval_metrics(model, data.val_set, config, device)
        runlog.write("source_val", epoch=epoch, **metrics["source_val"])
        log.info("epoch %d held-out source mAP %.1f%% (chooses best.pt)", epoch, 100 * metrics["source_val"]["mAP"])
    if data.eval_set is not None:
        metrics["target"] = _eval_metrics(model, data.eval_set, config, device)
        runlog.write("target_report", epoch=epoch, **metrics["target"])
        log.info("epoch %d target mAP %.1f%% rank-1 %.1f%% (report only: target labels choose nothing)",
                 epoch, 100 * metrics["target"]["mAP"], 100 * metrics["target"]["rank1"])
    return metrics
