"""Training batches: P x K source batches, target groups with their camera-style images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from training.camstyle_folder import find_camstyle_groups
from training.data import SourceImages, TargetGroups, TargetStream, seed_epoch, source_loader
from training.core.datasets import Sample, load_dataset, load_unlabelled_images
from training.core.errors import ReIDError
from training.losses import target_pseudo_labels
from training.core.imageio import decode_image
from training.transforms import eval_transform, train_transform


def target_stream(two_domains: Path, transform, batch: int = 3) -> tuple[TargetStream, list]:
    groups = find_camstyle_groups(load_unlabelled_images(two_domains / "market"), two_domains / "market" / "camstyle")
    return TargetStream(TargetGroups(groups, transform), batch, seed=0, workers=0), groups


def test_target_batch_holds_each_original_then_its_camera_styles(two_domains: Path) -> None:
    transform = eval_transform(64, 32)
    stream, groups = target_stream(two_domains, transform)
    batch = next(iter(stream))
    assert batch.images.shape == (3 * 7, 3, 64, 32)  # 3 originals x (original + all 6 cameras)
    assert batch.groups.tolist() == [g for g in batch.groups.unique_consecutive().tolist() for _ in range(7)]
    for row, index in enumerate(batch.groups.tolist()):
        path = groups[index].paths[row % 7]
        assert torch.equal(batch.images[row], transform(decode_image(path)))
    pseudo = target_pseudo_labels(batch.groups, offset=6)
    assert pseudo.min() == 6 and len(pseudo.unique()) == 3


def test_an_epoch_draws_the_same_batches_whatever_came_before(two_domains: Path) -> None:
    source = load_dataset(two_domains / "duke")
    augment = train_transform(64, 32)

    def epoch_batches(epoch: int, warm_up_epochs: int):
        loader = source_loader(SourceImages(source.train, augment), 3, 2, seed=1, workers=0)
        stream, _ = target_stream(two_domains, augment, batch=2)
        for e in [*range(1, warm_up_epochs + 1), epoch]:
            seed_epoch(1, e, 0, [loader, stream.loader])
            loader.batch_sampler.set_epoch(e)
            stream.set_epoch(e)
            src, tgt = next(iter(loader)), next(iter(stream))
        return src, tgt

    (a_src, a_tgt), (b_src, b_tgt) = epoch_batches(3, 0), epoch_batches(3, 2)
    assert torch.equal(a_src.images, b_src.images) and torch.equal(a_src.pids, b_src.pids)
    assert torch.equal(a_tgt.images, b_tgt.images) and torch.equal(a_tgt.groups, b_tgt.groups)
    assert a_src.pids.tolist()[::2] == a_src.pids.tolist()[1::2]  # K = 2 consecutive images per identity


def test_a_bad_image_in_a_loader_worker_is_a_reid_error_naming_it(tmp_path: Path) -> None:
    """Decoding runs in worker processes; the loader re-creates the worker's error in the main
    process, which must stay a ReIDError (a user error, one line) and name the file."""
    bad = tmp_path / "0001_c1s1_000001_01.jpg"
    bad.write_bytes(b"not a jpeg")
    loader = DataLoader(SourceImages([Sample(bad, pid=0, camid=0)], eval_transform(64, 32)), num_workers=1)
    with pytest.raises(ReIDError, match=f"{bad}: not an image file"):
        next(iter(loader))
