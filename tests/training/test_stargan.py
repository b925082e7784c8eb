"""Camera-style StarGAN: shapes, camera conditioning, the gradient penalty against hand-worked
values, training/resume/checkpoints, the generated layout against reid-synth's, bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from PIL import Image

from training.checkpoint import Checkpoint, save_checkpoint
from training.cli.camstyle import main
from training.cli.synth import main as synth_main
from training.core.datasets import load_unlabelled_images, parse_market1501_name
from training.model import ModelConfig, ReIDModel
from training.stargan import (
    Discriminator,
    Generator,
    StarGANConfig,
    TrainConfig,
    load_stargan,
    lr_factor,
    train_stargan,
)
from training.stargan.trainer import discriminator_step, generator_step
from training.stargan.data import CameraImages
from training.stargan.losses import camera_classification_loss, gradient_penalty
from training.stargan.model import tile_camera

TINY_NET = ["--image-size", "32x16", "--g-width", "8", "--res-blocks", "1", "--d-width", "8", "--d-downsamples", "3"]
FAST = ["--workers", "0", "--batch-size", "8"]
TINY_CONFIG = StarGANConfig(num_cameras=6, image_size=(32, 16), g_width=8, g_res_blocks=1, d_width=8, d_downsamples=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny networks are all overhead: two threads on a busy 2-core machine ran 15x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated market domain (6 cameras, 24 training images) with its camstyle oracle."""
    root = tmp_path_factory.mktemp("market")
    args = ["--out", str(root), "--domain", "market", "--ids", "8", "--images-per-id", "6", "--height", "32",
            "--width", "16", "--distractors", "2", "--junk", "1", "--camstyle", "--workers", "1"]
    assert synth_main(args) == 0
    return root


@pytest.fixture(scope="module")
def trained(market: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder after 10 iterations of the tiny StarGAN."""
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", str(market), "--out", str(run), "--iters", "10", *TINY_NET, *FAST]) == 0
    return run


# ----------------------------------------------------------------------------------------------
# Networks


def test_default_shapes_at_256x128() -> None:
    # StarGAN's layout at full size; thin widths keep the test fast, the shapes do not depend on them.
    config = StarGANConfig(num_cameras=6, g_width=4, g_res_blocks=6, d_width=2)
    images = torch.rand(2, 3, 256, 128) * 2 - 1
    fake = Generator(config)(images, torch.tensor([0, 5]))
    assert fake.shape == (2, 3, 256, 128)
    assert fake.min() >= -1 and fake.max() <= 1  # tanh
    out = Discriminator(config)(images)
    assert out.patch.shape == (2, 1, 4, 2)  # six stride-2 convs: 256x128 / 64
    assert out.logits.shape == (2, 6)
    convs = [m for m in Discriminator(config).main if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.stride == (2, 2) for c in convs)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in Discriminator(config).modules())
    blocks = [m for m in Generator(config).modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 6


def test_tile_camera_adds_one_hot_planes() -> None:
    images = torch.zeros(2, 3, 4, 2)
    tiled = tile_camera(images, torch.tensor([1, 3]), 4)
    assert tiled.shape == (2, 7, 4, 2)
    assert torch.equal(tiled[:, 3:, 0, 0], torch.tensor([[0.0, 1, 0, 0], [0, 0, 0, 1]]))
    assert torch.equal(tiled[:, 3:].amax(dim=(2, 3)), tiled[:, 3:].amin(dim=(2, 3)))  # constant planes


def test_camera_conditions_the_output() -> None:
    torch.manual_seed(0)
    generator = Generator(TINY_CONFIG).eval()
    image = torch.rand(1, 3, 32, 16) * 2 - 1
    outputs = [generator(image, torch.tensor([c])) for c in range(6)]
    for a in range(6):
        for b in range(a + 1, 6):
            assert (outputs[a] - outputs[b]).abs().mean() > 1e-3


def test_generator_batch_of_one_equals_batch_of_many() -> None:
    # Instance norm: each image is translated on its own, so generation batches are free to vary.
    torch.manual_seed(0)
    generator = Generator(TINY_CONFIG).train()  # no running statistics: same in both modes
    images, cams = torch.rand(4, 3, 32, 16) * 2 - 1, torch.tensor([0, 1, 2, 5])
    batched = generator(images, cams)
    for i in range(4):
        torch.testing.assert_close(generator(images[i : i + 1], cams[i : i + 1]), batched[i : i + 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(generator.eval()(images, cams), batched)


@pytest.mark.parametrize(
    "config, fragment",
    [
        (StarGANConfig(num_cameras=1), "at least 2 cameras"),
        (StarGANConfig(num_cameras=6, image_size=(100, 50)), "multiple of 64"),
        (StarGANConfig(num_cameras=6, image_size=(32, 16), d_downsamples=3, g_width=0), "widths must be >= 1"),
    ],
)
def test_bad_configs_are_refused(config: StarGANConfig, fragment: str) -> None:
    with pytest.raises(Exception, match=fragment):
        config.validate()


# ----------------------------------------------------------------------------------------------
# Losses


def test_gradient_penalty_of_a_linear_critic_is_hand_worked() -> None:
    # critic(x) = <w, x>: its gradient is w everywhere, so GP = (||w|| - 1)^2 for any alpha,
    # and dGP/dw = 2 (||w|| - 1) w / ||w||.
    w = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]], requires_grad=True)  # ||w|| = 5
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    assert gp.item() == pytest.approx(16.0)
    gp.backward()
    torch.testing.assert_close(w.grad, 2 * 4 * w.detach() / 5)


def test_gradient_penalty_sums_a_patch_map_per_sample() -> None:
    w = torch.full((1, 2, 2), 0.25)  # ||w|| = 0.5 -> (0.5 - 1)^2
    patches = lambda x: (x * w).reshape(x.shape[0], 1, 2, 2)  # noqa: E731 - a 2x2 patch map
    assert gradient_penalty(patches, torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2)).item() == pytest.approx(0.25)


def test_gradient_penalty_matches_finite_differences() -> None:
    torch.manual_seed(1)
    weight = torch.randn(6, dtype=torch.float64)
    critic = lambda x: torch.tanh(x.flatten(1) @ weight) + (x.flatten(1) ** 2).sum(1)  # noqa: E731
    real, fake = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    alpha = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    expected = []
    for i in range(3):
        x_hat = alpha[i] * real[i] + (1 - alpha[i]) * fake[i]
        grad = torch.zeros(6, dtype=torch.float64)
        for k in range(6):
            step = torch.zeros(6, dtype=torch.float64)
            step[k] = 1e-6
            grad[k] = (critic((x_hat + step)[None]) - critic((x_hat - step)[None])).item() / 2e-6
        expected.append((grad.norm() - 1) ** 2)
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(float(np.mean(expected)), rel=1e-6)


def test_lr_factor_is_linear_over_the_last_half() -> None:
    assert [lr_factor(i, 10, 0.5) for i in range(10)] == [1, 1, 1, 1, 1, 1.0, 0.8, 0.6, 0.4, 0.2]
    assert lr_factor(0, 10, 0.0) == 1.0 and lr_factor(9, 10, 1.0) == 1.0


# ----------------------------------------------------------------------------------------------
# Training


def _step_inputs() -> tuple[Generator, Discriminator, Tensor, Tensor, Tensor]:
    torch.manual_seed(0)
    real = torch.rand(4, 3, 32, 16) * 2 - 1
    return Generator(TINY_CONFIG), Discriminator(TINY_CONFIG), real, torch.tensor([0, 1, 2, 3]), torch.tensor([5, 4, 3, 0])


def _weights(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_discriminator_step_reports_its_losses_and_moves_only_the_discriminator() -> None:
    generator, discriminator, real, camids, target = _step_inputs()
    g_before, d_before = _weights(generator), _weights(discriminator)
    with torch.no_grad():
        fake = generator(real, target)
        expected_adv = (discriminator(fake).patch.mean() - discriminator(real).patch.mean()).item()
        expected_cls = camera_classification_loss(discriminator(real).logits, camids).item()
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    losses = discriminator_step(generator, discriminator, opt_d, real, camids, target, lambda_cls=1.0, lambda_gp=10.0)
    assert losses.d_adv == pytest.approx(expected_adv, rel=1e-5, abs=1e-7)
    assert losses.d_cls == pytest.approx(expected_cls, rel=1e-5)
    assert losses.d_gp >= 0.0
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in g_before.items())
    assert all(p.grad is None for p in generator.parameters())
    assert any(not torch.equal(v, discriminator.state_dict()[k]) for k, v in d_before.items())


def test_generator_step_reports_its_losses_and_moves_only_the_generator() -> None:
    generator, discriminator, real, camids, target = _step_inputs()
    g_before, d_before = _weights(generator), _weights(discriminator)
    with torch.no_grad():
        fake = generator(real, target)
        expected_adv = -discriminator(fake).patch.mean().item()
        expected_cls = camera_classification_loss(discriminator(fake).logits, target).item()
        expected_rec = (real - generator(fake, camids)).abs().mean().item()
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    losses = generator_step(generator, discriminator, opt_g, real, camids, target, lambda_cls=1.0, lambda_rec=10.0)
    assert losses == pytest.approx((expected_adv, expected_cls, expected_rec), rel=1e-5)
    assert all(torch.equal(v, discriminator.state_dict()[k]) for k, v in d_before.items())
    assert all(p.grad is None and p.requires_grad for p in discriminator.parameters())  # frozen, then unfrozen
    assert any(not torch.equal(v, generator.state_dict()[k]) for k, v in g_before.items())


def test_generator_step_unfreezes_the_discriminator_when_it_fails() -> None:
    generator, discriminator, real, camids, _ = _step_inputs()
    opt_g = torch.optim.Adam(generator.parameters())
    with pytest.raises((IndexError, RuntimeError)):
        generator_step(generator, discriminator, opt_g, real, camids, torch.tensor([9, 9, 9, 9]), lambda_cls=1.0, lambda_rec=10.0)
    assert all(p.requires_grad for p in discriminator.parameters())


def test_a_seeded_run_repeats_its_losses(market: Path, tmp_path: Path) -> None:
    import training.stargan.trainer as trainer

    samples = load_unlabelled_images(market)
    real_save = trainer.save_stargan

    def losses(run: Path, seed: int) -> list[dict[str, float]]:
        seen: list[dict[str, float]] = []
        trainer.save_stargan = lambda path, ckpt: (seen.append(ckpt.metrics), real_save(path, ckpt))  # type: ignore[assignment]
        try:
            recipe = TrainConfig(iters=4, batch_size=4, workers=0, n_critic=2, checkpoint_every=1, seed=seed)
            train_stargan(samples, TINY_CONFIG, recipe, run, device=torch.device("cpu"), progress=False)
        finally:
            trainer.save_stargan = real_save
        return seen

    first = losses(tmp_path / "a", seed=3)
    assert len(first) == 4 and "g_rec" not in first[0] and "g_rec" in first[1]
    assert losses(tmp_path / "b", seed=3) == first
    assert losses(tmp_path / "c", seed=4) != first


def _real_classification_loss(run: Path, market: Path) -> float:
    state = load_stargan(run / "stargan.pt")
    discriminator = Discriminator(state.model_config)
    discriminator.load_state_dict(state.discriminator)
    items = [CameraImages(load_unlabelled_images(market), (32, 16), flip=False)[i] for i in range(24)]
    images, camids = torch.stack([it.image for it in items]), torch.tensor([it.camid for it in items])
    with torch.no_grad():
        return camera_classification_loss(discriminator(images).logits, camids).item()


@pytest.mark.slow
def test_training_lowers_the_camera_classification_loss(market: Path, tmp_path: Path) -> None:
    samples = load_unlabelled_images(market)
    recipe = TrainConfig(iters=1, batch_size=8, workers=0, lr_d=1e-3)
    train_stargan(samples, TINY_CONFIG, recipe, tmp_path / "a", device=torch.device("cpu"), progress=False, log=lambda _: None)
    before = _real_classification_loss(tmp_path / "a", market)
    train_stargan(samples, TINY_CONFIG, recipe.__class__(**{**recipe.__dict__, "iters": 120}), tmp_path / "a",
                  device=torch.device("cpu"), resume=True, progress=False, log=lambda _: None)
    after = _real_classification_loss(tmp_path / "a", market)
    assert after < 0.8 * before, (before, after)


def test_train_checkpoints_and_resume_continues(market: Path, trained: Path, tmp_path: Path) -> None:
    state = load_stargan(trained / "stargan.pt")
    assert state.iteration == 10
    assert state.model_config == TINY_CONFIG
    assert state.train_config["lambda_rec"] == 10.0 and state.train_config["n_critic"] == 5
    assert state.data["cameras"] == 6 and state.data["images"] == 24
    assert {"d_adv", "d_cls", "d_gp", "g_adv", "g_cls", "g_rec"} <= set(state.metrics)
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    # --resume takes the architecture and recipe from the checkpoint; only --iters is new.
    assert main(["train", "--data", str(market), "--out", str(run), "--iters", "15", "--resume", "--workers", "0"]) == 0
    resumed = load_stargan(run / "stargan.pt")
    assert resumed.iteration == 15 and resumed.model_config == TINY_CONFIG
    assert resumed.train_config["batch_size"] == 8
    assert not torch.equal(resumed.generator["main.0.weight"], state.generator["main.0.weight"])
    assert resumed.d_optimizer["state"][0]["step"].item() == 15


def test_checkpoints_every_n_iterations(market: Path, tmp_path: Path) -> None:
    samples = load_unlabelled_images(market)
    seen: list[int] = []
    import training.stargan.trainer as trainer

    real_save = trainer.save_stargan
    trainer.save_stargan = lambda path, ckpt: (seen.append(ckpt.iteration), real_save(path, ckpt))  # type: ignore[assignment]
    try:
        recipe = TrainConfig(iters=7, batch_size=4, workers=0, checkpoint_every=3)
        train_stargan(samples, TINY_CONFIG, recipe, tmp_path, device=torch.device("cpu"), progress=False)
    finally:
        trainer.save_stargan = real_save
    assert seen == [3, 6, 7]


def test_time_budget_stops_with_a_checkpoint(market: Path, tmp_path: Path) -> None:
    samples = load_unlabelled_images(market)
    recipe = TrainConfig(iters=50, batch_size=4, workers=0)
    summary = train_stargan(samples, TINY_CONFIG, recipe, tmp_path, device=torch.device("cpu"), max_seconds=0.0,
                            progress=False, log=lambda _: None)
    assert summary.iteration == 1
    assert load_stargan(tmp_path / "stargan.pt").iteration == 1


# ----------------------------------------------------------------------------------------------
# Generation: the layout reid-synth --camstyle writes


def _check_layout(camstyle_dir: Path, train_dir: Path) -> dict:
    """What a reader of the camstyle layout relies on; returns camstyle.json."""
    info = json.loads((camstyle_dir / "camstyle.json").read_text())
    assert info["pattern"] == "<stem>_fake_<j>.jpg"
    originals = sorted(train_dir.glob("*.jpg"))
    expected = {f"{p.stem}_fake_{j}.jpg" for p in originals for j in info["cameras"]}
    assert {p.name for p in camstyle_dir.glob("*.jpg")} == expected
    assert info["images"] == len(expected)
    for original in originals:
        for j in info["cameras"]:
            fake = camstyle_dir / f"{original.stem}_fake_{j}.jpg"
            assert parse_market1501_name(fake) == parse_market1501_name(original)  # labels of the original
            with Image.open(fake) as a, Image.open(original) as b:
                assert a.size == b.size
    return info


def test_generate_writes_the_camstyle_layout(market: Path, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "camstyle"
    assert main(["generate", "--checkpoint", str(trained / "stargan.pt"), "--data", str(market), "--out", str(out),
                 "--workers", "0", "--batch-size", "5"]) == 0
    ours = _check_layout(out, market / "bounding_box_train")
    oracle = _check_layout(market / "camstyle", market / "bounding_box_train")
    assert len(list(out.glob("*.jpg"))) == 24 * 6
    assert set(oracle) - {"oracle"} <= set(ours)
    assert ours["cameras"] == oracle["cameras"] == [1, 2, 3, 4, 5, 6]
    assert ours["includes_own_camera"] is True and ours["format"] == "reid-camstyle"
    assert Path(ours["source"]) == (market / "bounding_box_train").resolve()
    assert ours["generator"]["iteration"] == 10
    # Query and gallery images are never translated.
    tested = {p.stem for split in ("query", "bounding_box_test") for p in (market / split).glob("*.jpg")}
    assert not any(p.name.split("_fake_")[0] in tested for p in out.glob("*.jpg"))
    # The sample sheet: a header, then 8 rows cycling over the cameras, original + 6 cameras,
    # 16 px crops enlarged 4x.
    with Image.open(out / "preview" / "sample_sheet.png") as sheet:
        assert sheet.size == (7 * (64 + 2) + 2, 14 + 8 * (128 + 2) + 2)


def test_generated_image_is_the_generator_output(market: Path, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "cs"
    assert main(["generate", "--checkpoint", str(trained / "stargan.pt"), "--data", str(market), "--out", str(out),
                 "--workers", "0", "--sheet-rows", "0"]) == 0
    generator = load_stargan(trained / "stargan.pt").build_generator()
    sample = load_unlabelled_images(market)[3]
    image = CameraImages([sample], (32, 16), flip=False)[0].image
    with torch.no_grad():
        expected = ((generator(image[None], torch.tensor([4]))[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    written = np.asarray(Image.open(out / f"{sample.path.stem}_fake_5.jpg"), dtype=np.float64)
    assert np.abs(written - expected).mean() < 4.0  # JPEG at quality 95
    assert not (out / "preview").exists()


def test_generate_into_a_previous_output_replaces_it(market: Path, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "cs"
    args = ["generate", "--checkpoint", str(trained / "stargan.pt"), "--data", str(market), "--out", str(out),
            "--workers", "0", "--sheet-rows", "0"]
    assert main(args) == 0
    (out / "9999_c1s1_000001_01_fake_1.jpg").write_bytes(b"stale")
    assert main(args) == 0
    assert len(list(out.glob("*.jpg"))) == 24 * 6


# ----------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reid-camstyle: error: ") and "\n" not in err, err
    assert fragment in err, err


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "does not exist")


def test_single_camera_data(market: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "one_camera"
    folder.mkdir()
    for path in sorted((market / "bounding_box_train").glob("*_c1s*.jpg")):
        shutil.copy(path, folder / path.name)
    _one_line_error(capsys, ["train", "--data", str(folder), "--out", str(tmp_path / "r")], "at least 2 cameras")


def test_not_a_stargan_checkpoint(market: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    base = ["generate", "--data", str(market), "--out", str(tmp_path / "o"), "--checkpoint"]
    _one_line_error(capsys, [*base, str(text)], "not a readable checkpoint")
    reid = tmp_path / "reid.pt"
    config = ModelConfig(num_classes=3, backbone="resnet18", height=64, width=32, last_stride=1)
    save_checkpoint(reid, Checkpoint(config, ReIDModel(config).state_dict()))
    _one_line_error(capsys, [*base, str(reid)], "is not a StarGAN checkpoint")
    _one_line_error(capsys, [*base, str(tmp_path / "missing.pt")], "does not exist")


def test_existing_run_without_resume(market: Path, trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["train", "--data", str(market), "--out", str(trained), "--iters", "12", *TINY_NET], "--resume")


def test_resume_with_another_architecture(market: Path, trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["train", "--data", str(market), "--out", str(trained), "--resume", "--g-width", "16"], "new --out")


def test_bad_values(market: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = ["train", "--data", str(market), "--out", str(tmp_path / "r")]
    _one_line_error(capsys, [*run, "--image-size", "40x20"], "multiple of 64")
    _one_line_error(capsys, [*run, "--iters", "0"], "must be >= 1")
    _one_line_error(capsys, [*run, "--image-size", "32by16"], "expected HEIGHTxWIDTH such as 256x128")


def test_generate_refuses_a_foreign_folder_and_unknown_cameras(
    market: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    gen = ["generate", "--checkpoint", str(trained / "stargan.pt"), "--data", str(market)]
    _one_line_error(capsys, [*gen, "--out", str(foreign)], "not written by reid-camstyle")
    assert (foreign / "mine.txt").read_text() == "keep"
    seven = tmp_path / "seven"
    seven.mkdir()
    shutil.copy(next((market / "bounding_box_train").glob("*.jpg")), seven / "0001_c7s1_000001_01.jpg")
    _one_line_error(capsys, [*gen, "--data", str(seven), "--out", str(tmp_path / "o")], "cameras c1..c6")
