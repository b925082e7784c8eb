"""The dual-branch model: outputs, normalisation, pooling, pretrained loading, ONNX export."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from training.core.errors import ReIDError
from training.model import (
    EMBEDDING_KINDS,
    ModelConfig,
    ReIDModel,
    ReIDOutputs,
    StripePool,
    build_backbone,
    embedding_dim,
    search_embedding,
)
from training.pretrained import imagenet_checkpoint_path, load_backbone_weights

H, W = 128, 64


def small_config(**overrides) -> ModelConfig:
    values = dict(
        num_classes=7, backbone="resnet18", height=H, width=W, fc_dim=64, embed_dim=16, lstm_hidden=24
    )
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture(scope="module")
def model() -> ReIDModel:
    torch.manual_seed(0)
    return ReIDModel(small_config())


def expected_shapes(batch: int, config: ModelConfig) -> dict[str, tuple[int, int]]:
    return {
        "global_feat": (batch, 512),
        "local_feat": (batch, 2 * config.lstm_hidden * config.num_stripes if config.use_local else 0),
        "global_embed": (batch, config.embed_dim),
        "local_embed": (batch, config.embed_dim if config.use_local else 0),
        "global_logits": (batch, config.num_classes),
        "local_logits": (batch, config.num_classes if config.use_local else 0),
    }


@pytest.mark.parametrize("training", [True, False])
def test_forward_returns_named_outputs_in_train_and_eval(model: ReIDModel, training: bool) -> None:
    model.train(training)
    with torch.no_grad():
        out = model(torch.rand(3, 3, H, W))
    assert type(out) is ReIDOutputs
    assert {k: tuple(v.shape) for k, v in out._asdict().items()} == expected_shapes(3, model.config)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out)
    model.eval()


def test_without_local_branch_local_fields_are_empty() -> None:
    config = small_config(use_local=False)
    net = ReIDModel(config).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, H, W))
    assert type(out) is ReIDOutputs
    assert {k: tuple(v.shape) for k, v in out._asdict().items()} == expected_shapes(2, config)
    assert not hasattr(net, "lstm")
    assert search_embedding(out, "global").shape == (2, 512)
    with pytest.raises(ReIDError, match="use_local"):
        search_embedding(out, "global+local")


def test_eval_is_deterministic_and_batch_independent(model: ReIDModel) -> None:
    model.eval()
    images = torch.rand(4, 3, H, W)
    with torch.no_grad():
        batch = model(images)
        single = model(images[2:3])
    for name, value in batch._asdict().items():
        torch.testing.assert_close(value[2:3], getattr(single, name), rtol=1e-4, atol=1e-4, msg=name)


def test_normalisation_happens_inside_the_model() -> None:
    config = small_config(pixel_mean=(0.2, 0.5, 0.7), pixel_std=(0.5, 0.25, 0.1))
    net = ReIDModel(config).eval()
    assert torch.allclose(net.state_dict()["pixel_mean"].flatten(), torch.tensor([0.2, 0.5, 0.7]))
    images = torch.rand(2, 3, H, W)  # raw [0, 1] RGB, as a client would send
    mean = torch.tensor(config.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(config.pixel_std).view(1, 3, 1, 1)
    with torch.no_grad():
        fmap = net.backbone((images - mean) / std)
        expected = fmap.mean(dim=(2, 3)) + fmap.amax(dim=(2, 3))
        got = net(images).global_feat
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("rows,stripes", [(8, 3), (4, 3), (16, 3), (6, 2), (5, 1)])
@pytest.mark.parametrize("mode", ["avg", "max", "avg+max"])
def test_stripe_pool_matches_adaptive_pooling(rows: int, stripes: int, mode: str) -> None:
    x = torch.randn(2, 5, rows, 3)
    expected = {
        "avg": F.adaptive_avg_pool2d(x, (stripes, 1)),
        "max": F.adaptive_max_pool2d(x, (stripes, 1)),
        "avg+max": F.adaptive_avg_pool2d(x, (stripes, 1)) + F.adaptive_max_pool2d(x, (stripes, 1)),
    }[mode]
    got = StripePool(stripes, mode)(x)  # (B, S, C)
    torch.testing.assert_close(got, expected.squeeze(3).transpose(1, 2))


@pytest.mark.parametrize("last_stride,map_size", [(2, (4, 2)), (1, (8, 4))])
def test_last_stride_sets_feature_map_size(last_stride: int, map_size: tuple[int, int]) -> None:
    config = small_config(last_stride=last_stride)
    backbone = build_backbone(config.backbone, config.last_stride)
    with torch.no_grad():
        fmap = backbone(torch.rand(1, 3, H, W))
    assert tuple(fmap.shape[2:]) == map_size == config.feature_map_size


def test_search_embeddings(model: ReIDModel) -> None:
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, H, W))
    assert torch.equal(search_embedding(out, "global"), out.global_feat)  # the paper's raw POOL-5
    both = search_embedding(out, "global+local")
    assert both.shape == (3, embedding_dim(model.config, "global+local"))
    torch.testing.assert_close(both.norm(dim=1), torch.ones(3))
    # Each half carries half the weight, whatever the raw scales of POOL-5 and the BiLSTM.
    torch.testing.assert_close(both[:, :512].norm(dim=1), torch.full((3,), 1 / math.sqrt(2)))
    for kind in EMBEDDING_KINDS:
        assert search_embedding(out, kind).shape[1] == embedding_dim(model.config, kind)
    with pytest.raises(ReIDError, match="not supported"):
        search_embedding(out, "pool5")


def test_config_validation_and_round_trip() -> None:
    config = small_config(last_stride=1, pooling="max")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ReIDError, match="resnet101"):
        ModelConfig(num_classes=4, backbone="resnet101")
    with pytest.raises(ReIDError, match="pooling"):
        ModelConfig(num_classes=4, pooling="gem")
    with pytest.raises(ReIDError, match="stripes"):
        ModelConfig(num_classes=4, height=64, width=32, last_stride=2)  # a 2-row map cannot hold 3 stripes
    with pytest.raises(ReIDError, match="unknown model config keys"):
        ModelConfig.from_dict({"num_classes": 4, "lr": 0.1})


def test_resnet50_default_widths() -> None:
    config = ModelConfig(num_classes=4)
    assert (config.feature_channels, config.local_dim, config.feature_map_size) == (2048, 1536, (8, 4))
    assert embedding_dim(config, "global+local") == 2048 + 1536


# --- pretrained weights -------------------------------------------------------------------


def test_load_state_dict_file_round_trip(tmp_path, caplog) -> None:
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # wrapped form, fc.* included
    net = ReIDModel(small_config())
    with caplog.at_level(logging.INFO, logger="training.pretrained"):
        load_backbone_weights(net, path)
    for name, value in net.backbone.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name
    assert str(path) in caplog.text


def test_wrong_weights_file_is_a_clear_error(tmp_path) -> None:
    net = ReIDModel(small_config())
    deeper = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), deeper)
    with pytest.raises(ReIDError, match=r"r34\.pth does not match the resnet18 backbone.*unexpected"):
        load_backbone_weights(net, deeper)
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ReIDError, match=r"notes\.pth"):
        load_backbone_weights(net, garbage)
    with pytest.raises(ReIDError, match="does not exist"):
        load_backbone_weights(net, tmp_path / "missing.pth")


def test_imagenet_without_cache_says_what_to_do(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    attempted = []

    def offline(url, *args, **kwargs):
        attempted.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ReIDError) as info:
        load_backbone_weights(ReIDModel(small_config()), "imagenet")
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "--pretrained PATH" in message and "--pretrained none" in message
    assert attempted == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]


def test_imagenet_from_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = imagenet_checkpoint_path("resnet18")
    cached.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), cached)
    net = ReIDModel(small_config())
    load_backbone_weights(net, "imagenet")
    assert torch.equal(net.backbone.conv1.weight, reference.conv1.weight)


def test_none_keeps_random_weights_and_says_so(caplog) -> None:
    net = ReIDModel(small_config())
    before = net.backbone.conv1.weight.clone()
    with caplog.at_level(logging.INFO, logger="training.pretrained"):
        load_backbone_weights(net, "none")
    assert torch.equal(net.backbone.conv1.weight, before)
    assert "random weights" in caplog.text


# --- ONNX ---------------------------------------------------------------------------------


class _Features(torch.nn.Module):
    def __init__(self, net: ReIDModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(images)
        return out.global_feat, out.local_feat


@pytest.mark.slow
def test_onnx_export_keeps_the_bilstm(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    wrapper = _Features(ReIDModel(small_config())).eval()
    path = tmp_path / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        wrapper,
        (torch.rand(2, 3, H, W),),
        str(path),
        input_names=["images"],
        output_names=["global_feat", "local_feat"],
        dynamo=True,
        dynamic_shapes={"images": {0: batch}},
    )
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "LSTM" in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(3, 3, H, W)  # a batch size other than the exported one
    with torch.no_grad():
        expected = wrapper(images)
    got = session.run(None, {"images": images.numpy()})
    for onnx_out, torch_out in zip(got, expected):
        np.testing.assert_allclose(onnx_out, torch_out.numpy(), rtol=1e-3, atol=1e-4)
