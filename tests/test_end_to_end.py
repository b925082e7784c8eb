"""The whole product on generated data: train -> export -> index -> serve -> search.

Every stage runs through the command a user would type (``main([...])``) or the client they
would use, and each hand-over is checked: the deployed model + gallery score the same mAP as
the checkpoint it came from (also re-ranked), and a crop uploaded to the live server finds itself first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from live_server import serve  # noqa: E402

from clients.client import ReIDClient  # noqa: E402
from export.cli import main as export_main  # noqa: E402
from index.cli import main as index_main  # noqa: E402
from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402
from training.cli.evaluate import main as eval_main  # noqa: E402
from training.cli.synth import main as synth_main  # noqa: E402
from training.cli.train import main as train_main  # noqa: E402

pytestmark = pytest.mark.slow


def last_json(text: str) -> dict:
    """The last JSON object in ``text`` that starts a line (commands may print progress first)."""
    lines = text.splitlines()
    for start in reversed(range(len(lines))):
        if lines[start].startswith("{"):
            try:
                return json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON object in output:\n{text}")


def test_train_export_index_serve_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert synth_main(["--out", str(data), "--ids", "16", "--images-per-id", "6", "--height", "64",
                       "--width", "32", "--camstyle", "--distractors", "6", "--junk", "2", "--workers", "1"]) == 0
    source, target = data / "duke", data / "market"

    run = tmp_path / "run"
    assert train_main([
        "--source", str(source), "--target", str(target), "--camstyle", str(target / "camstyle"),
        "--out", str(run), "--backbone", "resnet18", "--height", "64", "--width", "32", "--last-stride", "1",
        "--ids-per-batch", "4", "--images-per-id", "2", "--target-batch", "2", "--epochs", "2",
        "--max-steps-per-epoch", "3", "--eval-every", "2", "--pretrained", "none", "--device", "cpu",
        "--workers", "0",
    ]) == 0
    checkpoint = run / "last.pt"  # no best.pt: nothing may be chosen on the target's labels
    assert checkpoint.is_file() and not (run / "best.pt").exists()
    assert load_checkpoint(checkpoint).epoch == 2

    capsys.readouterr()
    assert eval_main(["--checkpoint", str(checkpoint), "--data", str(target), "--device", "cpu", "--json"]) == 0
    trained = last_json(capsys.readouterr().out)

    model = tmp_path / "model.onnx"
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(model)]) == 0
    assert model.is_file()

    gallery = tmp_path / "gallery"
    assert index_main(["build", "--model", str(model), "--out", str(gallery), "--quiet",
                       str(target / "bounding_box_test")]) == 0
    capsys.readouterr()
    assert index_main(["stats", str(gallery), "--json"]) == 0
    stats = last_json(capsys.readouterr().out)
    gallery_files = sorted((target / "bounding_box_test").glob("*.jpg"))
    junk = [p for p in gallery_files if p.name.startswith("-1")]
    assert stats["count"] == len(gallery_files) - len(junk)

    # The deployed ONNX model + FAISS gallery score what the checkpoint scored in training.
    assert index_main(["eval", "--model", str(model), "--data", str(target), "--gallery", str(gallery),
                       "--quiet", "--json"]) == 0
    deployed = last_json(capsys.readouterr().out)
    assert deployed["mAP"] == pytest.approx(trained["mAP"], abs=1e-3)
    assert deployed["rank1"] == pytest.approx(trained["rank1"], abs=1e-3)

    # ... and so do they after k-reciprocal re-ranking and after alpha query expansion.
    for options in (["--rerank"], ["--aqe", "3"]):
        assert eval_main(["--checkpoint", str(checkpoint), "--data", str(target), "--device", "cpu", "--json",
                          *options]) == 0
        trained_reranked = last_json(capsys.readouterr().out)
        assert index_main(["eval", "--model", str(model), "--data", str(target), "--gallery", str(gallery),
                           "--quiet", "--json", *options]) == 0
        deployed_reranked = last_json(capsys.readouterr().out)
        for metric in ("mAP", "rank1", "mINP"):
            assert deployed_reranked[metric] == pytest.approx(trained_reranked[metric], abs=1e-3), (options, metric)
        assert deployed_reranked["mAP"] != trained["mAP"]

    # Serve it and ask the live server where a gallery crop appears: it must find itself first.
    settings = Settings(model=model, gallery=gallery, api_key="e2e-key", onnx_threads=1, faiss_threads=1,
                        image_roots=(target / "bounding_box_test",))
    crop = next(p for p in gallery_files if not p.name.startswith(("0000", "-1")))
    pid = int(crop.name.split("_")[0])
    with serve(create_app(settings)) as url:
        client = ReIDClient(url, api_key="e2e-key")
        assert client.health().ready
        result = client.search(crop.read_bytes(), k=5)
        best = result.matches[0]
        assert best.distance < 1e-3 and best.pid == pid and Path(best.path).name == crop.name
        assert result.identities[0].pid == pid
        # The image URL the page would show serves the crop's bytes back.
        assert client.image(best.id) == crop.read_bytes()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
