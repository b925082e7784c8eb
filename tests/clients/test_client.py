"""The Python client and reid-search against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.cli import main
from clients.client import ReIDClient, ReIDClientError, ReIDHTTPError
from live_server import serve
from onnx_models import write_tiny_model
from server.app import create_app
from server.settings import Settings
from service_data import API_KEY, IDENTITY_COLOURS, crop_bytes


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("live")
    model = write_tiny_model(folder / "tiny.onnx", seed=3, embed_dim=8, height=16, width=8)
    settings = Settings(model=model, gallery=folder / "gallery", create_gallery=True, api_key=API_KEY,
                        workers=2, max_upload_bytes=64 * 1024)
    with serve(create_app(settings)) as url:
        with ReIDClient(url, api_key=API_KEY) as writer:
            for pid in IDENTITY_COLOURS:
                writer.add([crop_bytes(pid, 1), crop_bytes(pid, 2)], pid=pid, camera=[1, 2],
                           timestamp=[10.0 * pid + 1, 10.0 * pid + 2])
        yield url


def test_search_add_remove_stats_health(base_url: str, tmp_path: Path) -> None:
    with ReIDClient(base_url, api_key=API_KEY) as client:
        health = client.health()
        assert health.alive and health.ready and health.detail["embedding_dim"] == 8
        result = client.search(crop_bytes(3, 40), k=4, k_identities=2, exclude_cameras=[1])
        assert [i.pid for i in result.identities][:1] == [3]
        assert all(m.camera == 2 for m in result.matches) and len(result.matches) == 4
        assert result.timings.total_ms > 0 and result.gallery_size == 8
        path = tmp_path / "q.png"
        path.write_bytes(crop_bytes(1, 41))
        assert client.search(path, max_distance=1e6, time_from=0, time_to=15).matches[0].pid == 1
        added = client.add([crop_bytes(2, 50)], pid=99, camera=5)
        (item,) = added.items
        assert (item.pid, item.camera, added.gallery_size) == (99, 5, 9)
        assert client.image(item) == crop_bytes(2, 50)
        stats = client.stats()
        assert stats.count == 9 and stats.per_camera[5] == 1 and stats.identities == 5
        assert stats.backend == "faiss" and stats.address.endswith("gallery")
        assert client.remove(item.id).removed == 1
        assert client.stats().count == 8


def test_http_errors_carry_the_servers_message(base_url: str) -> None:
    with ReIDClient(base_url) as anonymous:
        with pytest.raises(ReIDHTTPError) as err:
            anonymous.add([crop_bytes(1)], pid=1)
        assert err.value.status == 401 and err.value.error == "unauthorized"
        with pytest.raises(ReIDHTTPError) as err:
            anonymous.search(b"not an image")
        assert (err.value.status, err.value.error) == (400, "not_an_image")
        with pytest.raises(ReIDHTTPError) as err:
            anonymous.search(crop_bytes(1), k=0)
        assert err.value.status == 422 and "k" in err.value.detail
    with ReIDClient(base_url, api_key=API_KEY) as client, pytest.raises(ReIDHTTPError) as err:
        client.remove_identity(12345)
    assert err.value.status == 404
    with ReIDClient("http://127.0.0.1:9", timeout=2) as nowhere, pytest.raises(ReIDClientError):
        nowhere.stats()


def test_cli_prints_a_ranked_table_and_json(base_url: str, tmp_path: Path, capsys) -> None:
    query = tmp_path / "q.png"
    query.write_bytes(crop_bytes(4, 60))
    assert main([str(query), "--url", base_url, "--k", "3", "--cameras", "1,2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 identities from a gallery of")
    assert lines[2].split()[:2] == ["1", "4"]  # rank 1 is identity 4
    assert main([str(query), "--url", base_url, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["identities"][0]["pid"] == 4

    crop = tmp_path / "new.png"
    crop.write_bytes(crop_bytes(1, 70))
    assert main(["add", str(crop), "--pid", "77", "--camera", "c3", "--url", base_url, "--api-key", API_KEY]) == 0
    assert "added 1 item(s)" in capsys.readouterr().out
    assert main(["stats", "--url", base_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identities"] == 5
    assert main(["remove", "--pid", "77", "--url", base_url, "--api-key", API_KEY]) == 0
    assert "removed 1 item(s)" in capsys.readouterr().out
    assert main(["health", "--url", base_url]) == 0


def test_rerank_and_multi_crop_queries_through_the_client_and_the_cli(base_url: str, tmp_path: Path,
                                                                     capsys) -> None:
    crops = [crop_bytes(2, 80 + i) for i in range(3)]
    with ReIDClient(base_url) as client:
        plain = client.search(crops[0], k=8)
        reranked = client.search(crops[0], k=8, rerank=True, rerank_size=6)
        assert plain.rerank is None and all(m.reranked_distance is None for m in plain.matches)
        assert reranked.rerank is not None and reranked.rerank.shortlist == 6
        assert (reranked.rerank.k1, reranked.rerank.k2, reranked.rerank.lambda_value) == (20, 6, 0.3)
        assert len(reranked.matches) == 6 and all(m.reranked_distance is not None for m in reranked.matches)
        assert reranked.identities[0].reranked_distance == reranked.identities[0].items[0].reranked_distance
        # the shortlist is the 6 nearest, re-ordered
        assert {m.id for m in reranked.matches} == {m.id for m in plain.matches[:6]}
        fused = client.search(crops, k=4)
        assert fused.crops == 3 and fused.identities[0].pid == 2
    paths = []
    for i, data in enumerate(crops):
        paths.append(tmp_path / f"t{i}.png")
        paths[-1].write_bytes(data)
    assert main([*map(str, paths), "--url", base_url, "--rerank", "--rerank-size", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "query: the mean embedding of 3 crops"
    assert out[2].startswith("re-ranked: k-reciprocal k1=20 k2=6 lambda=0.3 on the 5 nearest items")
    assert out[4].split()[:2] == ["1", "2"]


def test_cli_errors_are_one_line(base_url: str, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing.png"), "--url", base_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reid-search: error:") and "missing.png" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main([str(bad), "--url", base_url]) == 2
    assert "not_an_image" in capsys.readouterr().err
    assert main(["remove", "5", "--url", base_url]) == 2  # no key
    assert "401" in capsys.readouterr().err
    for cameras in ("one", "0", "c0"):
        with pytest.raises(SystemExit):
            main([str(bad), "--cameras", cameras])
    assert "camera numbers >= 1" in capsys.readouterr().err



@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "soon"])
def test_cli_refuses_a_timeout_that_is_not_positive(tmp_path: Path, capsys, timeout: str) -> None:
    # httpx only rejects a negative timeout while sending, as a ValueError traceback
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "q.png"), "--url", "http://127.0.0.1:9", "--timeout", timeout])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"reid-search: error: argument --timeout: expected a positive number of seconds, got '{timeout}'")


@pytest.mark.parametrize("pids", [range(5, 8), (5, 6, 7), __import__("numpy").array([5, 6, 7])])
def test_add_sends_one_form_value_per_file_for_any_sequence(pids) -> None:
    import httpx

    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.read())
        return httpx.Response(201, json={"items": [], "gallery_size": 0})

    with ReIDClient("http://reid.test", api_key=API_KEY, transport=httpx.MockTransport(answer)) as client:
        client.add([b"a", b"b", b"c"], pid=pids, camera=2)
    body = sent[0]
    assert [v for v in (5, 6, 7) if f'name="pid"\r\n\r\n{v}\r\n'.encode() in body] == [5, 6, 7]
    assert body.count(b'name="pid"') == 3 and body.count(b'name="camera"') == 1
