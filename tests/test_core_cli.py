"""The shared command-line pieces of training.core: one device vocabulary, one positive-int check,
one-line argument errors."""

from __future__ import annotations

import argparse

import pytest

from export.runtime import CPU, CUDA, TENSORRT, providers_for_device
from training.core.cliargs import ArgumentParser, add_device_argument, positive_int
from training.core.devices import DEVICES, choose_device
from training.core.errors import ReIDError, run_cli


@pytest.mark.parametrize("requested,available,expected", [
    ("cpu", True, "cpu"), ("cpu", False, "cpu"),
    ("auto", True, "cuda"), ("auto", False, "cpu"),
    ("cuda", True, "cuda"),
])
def test_choose_device(requested: str, available: bool, expected: str) -> None:
    assert choose_device(requested, available, who="torch") == expected


def test_choose_device_refuses_cuda_without_a_gpu_and_unknown_words() -> None:
    with pytest.raises(ReIDError, match="device cuda was asked for, but torch sees no CUDA device; use cpu or auto"):
        choose_device("cuda", False, who="torch")
    for word in ("gpu", "CUDA", ""):
        with pytest.raises(ReIDError, match="unknown device .*expected one of auto, cpu, cuda"):
            choose_device(word, True, who="torch")


def test_onnx_runtime_providers_follow_the_device_words() -> None:
    with_gpu = [TENSORRT, CUDA, CPU]
    assert providers_for_device("auto", with_gpu) == "auto"
    assert providers_for_device("cpu", with_gpu) == ["cpu"]
    assert providers_for_device("cuda", with_gpu) == ["cuda"]
    assert providers_for_device("auto", [CPU]) == "auto"
    with pytest.raises(ReIDError, match="onnxruntime sees no CUDA device"):
        providers_for_device("cuda", [CPU])


@pytest.mark.parametrize("text,value", [("1", 1), ("64", 64), (" 3 ", 3)])
def test_positive_int_accepts(text: str, value: int) -> None:
    assert positive_int(text) == value


@pytest.mark.parametrize("text,message", [("0", "must be >= 1, got 0"), ("-2", "must be >= 1, got -2"),
                                          ("many", "expected a whole number >= 1, got 'many'"),
                                          ("1.5", "expected a whole number >= 1")])
def test_positive_int_refuses(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        positive_int(text)


def test_parser_errors_are_one_line_through_run_cli(capsys: pytest.CaptureFixture[str]) -> None:
    parser = ArgumentParser(prog="reid-x")
    parser.add_argument("--threads", type=positive_int)
    add_device_argument(parser, "auto", "the model")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("go").add_argument("--k", type=positive_int, required=True)
    assert parser.parse_args(["--device", "cpu"]).device == "cpu"
    assert parser.parse_args([]).device == "auto"
    for argv, message in ((["--threads", "0"], "argument --threads: must be >= 1, got 0"),
                          (["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
                          (["go"], "the following arguments are required: --k")):
        assert run_cli("reid-x", lambda argv=argv: parser.parse_args(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("reid-x: error: ") and message in err and err.count("\n") == 1, err
    assert set(DEVICES) == {"auto", "cpu", "cuda"}
