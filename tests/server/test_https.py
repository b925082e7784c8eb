"""HTTPS with a self-signed certificate made here: the same search results as over HTTP,
through ReIDClient and through reid-serve / reid-search as processes."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from clients.cli import main as search_main
from clients.client import ReIDClient, ReIDClientError
from live_server import serve, serve_process
from security_data import READ_KEY
from server.app import create_app
from server.settings import Settings
from service_data import API_KEY, crop_bytes, fill_gallery

if shutil.which("openssl") is None:
    pytest.skip("openssl is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def _search(client: ReIDClient) -> dict:
    result = asdict(client.search(crop_bytes(2, variant=60), k=8, k_identities=3))
    result.pop("timings")
    return result


def test_https_gives_the_same_results_as_http(make_settings: Callable[..., Settings],
                                              certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    settings = make_settings(read_key=READ_KEY)
    with TestClient(create_app(settings)) as c:
        fill_gallery(c)
    with serve(create_app(settings)) as url, ReIDClient(url, api_key=READ_KEY) as client:
        over_http = _search(client)
    https_settings = make_settings(read_key=READ_KEY, ssl_certfile=cert, ssl_keyfile=key)
    with serve(create_app(https_settings), ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        assert url.startswith("https://")
        with ReIDClient(url, api_key=READ_KEY, verify=str(cert)) as client:
            assert _search(client) == over_http and over_http["identities"]
            image = client.image(over_http["matches"][0]["id"])
            assert image.startswith(b"\x89PNG")
        answer = httpx.get(url + "/", verify=str(cert))
        assert answer.headers["strict-transport-security"].startswith("max-age=")
        with ReIDClient(url, api_key=READ_KEY) as untrusting, pytest.raises(ReIDClientError):
            untrusting.search(crop_bytes(2))  # the system CAs do not know this certificate
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)


@pytest.mark.slow
def test_reid_serve_and_reid_search_over_https(model_path: Path, tmp_path: Path, certificate, capsys,
                                               monkeypatch) -> None:
    cert, key = certificate
    query = tmp_path / "query.png"
    query.write_bytes(crop_bytes(3, variant=61))
    args = ["--model", str(model_path), "--gallery", str(tmp_path / "gallery"), "--create",
            "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning"]
    env = {"REID_API_KEY": API_KEY, "REID_READ_KEY": READ_KEY}
    with serve_process(args, env=env, cafile=cert) as (url, _):
        crops = []
        for pid in (1, 2, 3):
            crop = tmp_path / f"p{pid}.png"
            crop.write_bytes(crop_bytes(pid, variant=5))
            crops.append(crop)
            assert search_main(["add", str(crop), "--pid", str(pid), "--url", url, "--cacert", str(cert),
                                "--api-key", API_KEY]) == 0
        capsys.readouterr()
        monkeypatch.delenv("REID_API_KEY", raising=False)
        assert search_main([str(query), "--url", url, "--cacert", str(cert), "--json"]) == 2
        assert "unauthorized" in capsys.readouterr().err  # reads are protected: no key, no answer
        monkeypatch.setenv("REID_API_KEY", READ_KEY)  # reid-search reads its key from the environment
        assert search_main([str(query), "--url", url, "--cacert", str(cert), "--json", "--k", "1"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["identities"][0]["pid"] == 3
