"""reid-serve's command line: settings from flags and REID_* variables, one-line errors, and
serving modules that never import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import server.cli
from onnx_models import write_tiny_model
from server.cli import build_parser, main, settings_from_args, settle_garbage_collector


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_MAX_K", "7")
    monkeypatch.setenv("REID_PORT", "9000")
    monkeypatch.setenv("REID_API_KEY", "from-env")
    args = build_parser().parse_args(["--model", "m.onnx", "--gallery", "g", "--port", "8123",
                                      "--no-micro-batching", "--image-root", "/a", "--image-root", "/b"])
    s = settings_from_args(args)
    assert (s.port, s.max_k, s.micro_batching) == (8123, 7, False)
    assert s.api_key is not None and s.api_key.get_secret_value() == "from-env"
    assert s.image_roots == (Path("/a"), Path("/b"))
    assert "from-env" not in repr(s)  # the key never shows in logs


def test_rerank_and_lane_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(["--model", "m.onnx", "--gallery", "g", "--rerank-size", "50",
                                      "--rerank-k1", "10", "--rerank-k2", "3", "--rerank-lambda", "0.6",
                                      "--max-query-crops", "4", "--lane-threads", "2"])
    s = settings_from_args(args)
    assert (s.rerank_size, s.rerank_k1, s.rerank_k2, s.rerank_lambda) == (50, 10, 3, 0.6)
    assert (s.max_query_crops, s.lane_threads) == (4, 2)


@pytest.mark.parametrize("argv,message", [
    (["--gallery", "g"], "model"),
    (["--model", "m.onnx", "--gallery", "g", "--port", "99999"], "port"),
    (["--model", "m.onnx", "--gallery", "g", "--max-batch", "0"], "max_batch"),
    (["--model", "m.onnx", "--gallery", "g", "--rerank-lambda", "1.5"], "rerank_lambda"),
    (["--model", "m.onnx", "--gallery", "g", "--lane-threads", "0"], "lane_threads"),
])
def test_bad_settings_are_one_line(argv: list[str], message: str, capsys, monkeypatch) -> None:
    monkeypatch.delenv("REID_MODEL", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid-serve: error: bad settings") and message in err and len(err.splitlines()) == 1


def test_device_uses_the_shared_vocabulary(tmp_path: Path, capsys, monkeypatch) -> None:
    from index import faiss_index

    monkeypatch.delenv("REID_DEVICE", raising=False)
    base = ["--model", "m.onnx", "--gallery", "g"]
    assert settings_from_args(build_parser().parse_args(base)).device == "cpu"
    monkeypatch.setenv("REID_DEVICE", "gpu")
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid-serve: error: bad settings") and "device" in err and len(err.splitlines()) == 1
    monkeypatch.delenv("REID_DEVICE")
    monkeypatch.setattr(faiss_index, "gpu_available", lambda: False)
    model = write_tiny_model(tmp_path / "m.onnx", seed=1)
    assert main(["--model", str(model), "--gallery", str(tmp_path / "g"), "--create", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "device cuda was asked for, but faiss sees no CUDA device" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_missing_model_gallery_or_mismatch_are_one_line(tmp_path: Path, capsys) -> None:
    model = write_tiny_model(tmp_path / "m.onnx", seed=1)
    other = write_tiny_model(tmp_path / "other.onnx", seed=2)
    assert main(["--model", str(tmp_path / "nope.onnx"), "--gallery", str(tmp_path / "g")]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main(["--model", str(model), "--gallery", str(tmp_path / "g")]) == 2
    assert "--create" in capsys.readouterr().err

    from export.runtime import Embedder
    from index.gallery import Gallery

    e = Embedder(model)
    Gallery.create(tmp_path / "g", dim=e.embedding_dim, fingerprint=e.fingerprint).close()
    assert main(["--model", str(other), "--gallery", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "rebuild the gallery" in err and len(err.splitlines()) == 1


def test_create_where_no_gallery_can_be_made_is_one_line_before_startup(tmp_path: Path, capsys) -> None:
    # Opened before uvicorn starts: these once failed inside its startup, as a traceback.
    model = write_tiny_model(tmp_path / "m.onnx", seed=1)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.jpg").write_bytes(b"")
    for gallery, message in ((a_file / "g", f"{a_file} is a file, not a folder"),
                             (a_file, "it is a file"),
                             (tmp_path / "busy", "the folder is not empty")):
        assert main(["--model", str(model), "--gallery", str(gallery), "--create", "--port", "1"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.splitlines()) == 1
        assert err.startswith("reid-serve: error: cannot create a gallery") and message in err


def test_port_in_use_is_one_line_before_loading_anything(tmp_path: Path, capsys) -> None:
    # uvicorn finds out only after startup, logs the bind error among its INFO lines and exits 3
    import socket

    model = write_tiny_model(tmp_path / "m.onnx", seed=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--model", str(model), "--gallery", str(tmp_path / "g"), "--create",
                     "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"reid-serve: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert not (tmp_path / "g").exists()


def test_serving_and_client_modules_do_not_import_torch() -> None:
    code = ("import sys, server.app, server.cli, clients.cli, clients.client; "
            "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'); "
            "print(leaked); raise SystemExit(1 if leaked else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    code = ("import sys, clients.cli, clients.client; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'index', 'export', 'training', 'server'}); "
            "print(bad); raise SystemExit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, "clients must speak HTTP only: " + done.stdout


def test_serve_loads_the_model_once_and_serves_what_it_opened(tmp_path: Path, monkeypatch, capsys) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    from export.runtime import Embedder
    from index.opening import model_description

    from server.threads import plan_threads

    model = write_tiny_model(tmp_path / "m.onnx", seed=1)
    loads: list[Path] = []
    lane_sessions: list[tuple[Path, int | None]] = []
    real_init = Embedder.__init__

    def counting_init(self, model_path, *args, **kwargs) -> None:
        # The one-thread session for overlapping micro-batches (server.threads) is a second,
        # silent session of the same file, not a second opening path.
        if kwargs.get("report", True):
            loads.append(Path(model_path))
        else:
            lane_sessions.append((Path(model_path), kwargs.get("intra_op_threads")))
        real_init(self, model_path, *args, **kwargs)

    answers = []

    def fake_run(app, **kwargs) -> None:  # what uvicorn would serve, without a socket
        assert len(loads) == 1  # loaded before listening
        with TestClient(app) as client:
            answers.append(client.get("/readyz").json())

    settled: list[int] = []  # the garbage collector is settled for serving, not for the test process
    monkeypatch.setattr(server.cli, "settle_garbage_collector", settled.append)
    monkeypatch.setattr(Embedder, "__init__", counting_init)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    assert main(["--model", str(model), "--gallery", str(tmp_path / "g"), "--create", "--port", "0"]) == 0, \
        capsys.readouterr().err
    assert settled == [10_000]
    assert loads == [model]
    assert lane_sessions == ([(model, 1)] if plan_threads(micro_batching=True).lane_session else [])
    assert answers[0]["status"] == "ready" and answers[0]["model_fingerprint"] == Embedder(model).fingerprint
    # the same manifest fields as a gallery reid-index makes (tests/index/test_opening.py)
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["extra"] == model_description(Embedder(model))


def test_faiss_device_auto_without_a_gpu_serves_on_the_cpu_after_one_log_line(
        tmp_path: Path, monkeypatch, caplog, capsys) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    from index import faiss_index

    monkeypatch.setattr(faiss_index, "gpu_available", lambda: False)  # as on a GPU-less host
    model = write_tiny_model(tmp_path / "m.onnx", seed=1)
    stats = []

    def fake_run(app, **kwargs) -> None:
        with TestClient(app) as client:
            stats.append(client.get("/gallery/stats").json())

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setattr(server.cli, "settle_garbage_collector", lambda threshold: None)
    caplog.set_level("INFO", logger="index.faiss_index")
    assert main(["--model", str(model), "--gallery", str(tmp_path / "g"), "--create", "--port", "0",
                 "--faiss-device", "auto"]) == 0, capsys.readouterr().err
    assert stats[0]["device"] == "cpu"
    lines = [r for r in caplog.records if r.name == "index.faiss_index"]
    assert len(lines) == 1 and lines[0].levelname == "INFO"
    assert "device=auto" in lines[0].getMessage() and "searching on the CPU" in lines[0].getMessage()


def test_faiss_device_is_listed_and_is_the_device_setting() -> None:
    assert "--faiss-device" in build_parser().format_help()
    for flag in ("--faiss-device", "--device"):
        args = build_parser().parse_args(["--model", "m.onnx", "--gallery", "g", flag, "auto"])
        assert settings_from_args(args).device == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "m.onnx", "--gallery", "g", "--faiss-device", "tpu"])


@pytest.mark.parametrize("threshold", [0, 12_345])
def test_the_garbage_collector_is_settled_before_serving(threshold: int) -> None:
    import gc

    args = ["--model", "m.onnx", "--gallery", "g", "--gc-threshold", str(threshold)]
    assert settings_from_args(build_parser().parse_args(args)).gc_threshold == threshold
    before = gc.get_threshold()
    try:
        settle_garbage_collector(threshold)
        if threshold:
            # What was loaded is out of the collector's scans; the young generation waits longer.
            assert gc.get_freeze_count() > 0 and gc.get_threshold() == (threshold, *before[1:])
        else:
            assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
