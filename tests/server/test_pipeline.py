"""The search pipeline end to end: raw image bodies, batched answers equal to lone ones, a lone
query that does not wait for a batch that will not grow, and the search stage's grouping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.metrics import Metrics
from server.pipeline import Coalescer
from server.service import SearchQuery, SearchService, Upload, embedding_device
from server.settings import Settings
from service_data import crop_bytes, fill_gallery, snapshot


def _answer(body: dict) -> tuple:
    return body["identities"], body["matches"], body["gallery_size"]


@pytest.mark.parametrize("fmt,media_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                            ("WEBP", "image/webp"), ("BMP", "image/bmp")])
def test_search_takes_the_image_itself_as_the_body(client: TestClient, fmt: str, media_type: str) -> None:
    fill_gallery(client)
    data = crop_bytes(2, variant=5, fmt=fmt)
    form = client.post("/search", params={"k": 8}, files={"image": ("q", data, media_type)})
    raw = client.post("/search", params={"k": 8}, content=data, headers={"content-type": media_type})
    assert form.status_code == raw.status_code == 200, raw.text
    assert _answer(raw.json()) == _answer(form.json())


@pytest.mark.parametrize("body,content_type,status,error", [
    (b"", "image/png", 400, "empty"),
    (b"not an image", "image/jpeg", 400, "not_an_image"),
    (crop_bytes(1), "text/plain", 415, "unsupported_media_type"),
    (crop_bytes(1), "application/octet-stream", 415, "unsupported_media_type"),
    (b"", None, 422, "invalid_parameter"),
])
def test_a_raw_body_that_is_no_crop_is_refused(client: TestClient, body: bytes, content_type: str | None,
                                               status: int, error: str) -> None:
    fill_gallery(client)
    before = snapshot(client)
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/search", content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert "\n" not in r.json()["detail"]
    assert snapshot(client) == before


def test_a_raw_body_over_the_limit_is_413(client: TestClient) -> None:
    r = client.post("/search", content=b"\xff\xd8\xff" + b"\0" * (64 * 1024), headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_schema_offers_the_raw_image_body(client: TestClient) -> None:
    body = client.get("/openapi.json").json()["paths"]["/search"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"multipart/form-data", "image/jpeg", "image/png", "image/bmp", "image/webp"}
    assert body["content"]["image/png"]["schema"] == {"type": "string", "format": "binary", "minLength": 1}


def _open(settings: Settings) -> SearchService:
    return SearchService.open(settings, Metrics())


async def _searches(service: SearchService, uploads: Sequence[bytes], query: SearchQuery,
                    together: bool) -> list:
    await service.start()
    try:
        calls = [service.search(Upload(data, "q.png"), query) for data in uploads]
        if together:
            return list(await asyncio.gather(*calls))
        return [await call for call in calls]
    finally:
        await service.aclose()


@pytest.mark.parametrize("pipeline", ["lanes", "stages"])
def test_batched_answers_equal_lone_answers(make_settings: Callable[..., Settings], pipeline: str) -> None:
    with TestClient(create_app(make_settings())) as c:
        fill_gallery(c)
    uploads = [crop_bytes(pid, variant=7) for pid in (1, 2, 3, 4, 1, 2, 3, 4, 2, 3)]
    query = SearchQuery(k=8, k_identities=3, items_per_identity=2)
    alone = asyncio.run(_searches(_open(make_settings(max_batch=1, pipeline=pipeline)), uploads, query,
                                  together=False))
    batched = asyncio.run(_searches(_open(make_settings(max_batch=8, max_wait_ms=50.0, pipeline=pipeline)),
                                    uploads, query, together=True))
    assert {o.timings.batch_size for o in alone} == {1}
    assert max(o.timings.batch_size for o in batched) > 1  # the rows really shared ONNX calls
    for one, many in zip(alone, batched, strict=True):
        assert [m.item.id for m in one.matches] == [m.item.id for m in many.matches]
        assert [i.pid for i in one.identities] == [i.pid for i in many.identities]
        np.testing.assert_allclose([m.distance for m in one.matches], [m.distance for m in many.matches],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pipeline", ["lanes", "stages"])
def test_a_bad_upload_in_a_batch_fails_only_its_own_search(make_settings: Callable[..., Settings],
                                                           pipeline: str) -> None:
    with TestClient(create_app(make_settings())) as c:
        fill_gallery(c)
    service = _open(make_settings(max_batch=8, max_wait_ms=50.0, pipeline=pipeline))
    uploads = [crop_bytes(1), b"not an image", crop_bytes(2), b"", crop_bytes(3)]

    async def together() -> list:
        await service.start()
        try:
            return await asyncio.gather(*(service.search(Upload(d, f"q{i}"), SearchQuery(k=4))
                                          for i, d in enumerate(uploads)), return_exceptions=True)
        finally:
            await service.aclose()

    out = asyncio.run(together())
    assert [type(o).__name__ for o in out] == ["SearchOutcome", "ImageDecodeError", "SearchOutcome",
                                                "ImageDecodeError", "SearchOutcome"]
    assert [o.reason for o in out if not hasattr(o, "matches")] == ["not_an_image", "empty"]
    assert all(len(o.matches) == 4 for o in out if hasattr(o, "matches"))


@pytest.mark.parametrize("pipeline", ["lanes", "stages"])
def test_a_lone_search_does_not_wait_for_max_wait(make_settings: Callable[..., Settings], pipeline: str) -> None:
    service = _open(make_settings(max_wait_ms=1000.0, pipeline=pipeline))
    started = time.perf_counter()
    [found] = asyncio.run(_searches(service, [crop_bytes(1)], SearchQuery(), together=False))
    assert found.timings.batch_size == 1
    assert time.perf_counter() - started < 0.8 and found.timings.total < 0.5


def test_the_search_stage_groups_what_arrives_together() -> None:
    groups: list[list[int]] = []

    def run_group(items: Sequence[int]) -> list[int | Exception]:
        groups.append(list(items))
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

    async def scenario() -> list:
        with ThreadPoolExecutor(2) as pool:
            stage = Coalescer(run_group, pool)
            first = await asyncio.gather(*(stage.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True)
            second = await stage.submit(5)
            return [*first, second]

    out = asyncio.run(scenario())
    assert groups == [[1, 2, -3, 4], [5]]
    assert out[:2] == [10, 20] and out[3:] == [40, 50]
    assert isinstance(out[2], ValueError) and str(out[2]) == "bad -3"


def test_a_failing_search_group_fails_its_items_and_the_stage_goes_on() -> None:
    calls: list[int] = []

    def run_group(items: Sequence[int]) -> list[int]:
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("store failed")
        return list(items)

    async def scenario() -> tuple:
        with ThreadPoolExecutor(1) as pool:
            stage = Coalescer(run_group, pool)
            failed = await asyncio.gather(stage.submit(1), stage.submit(2), return_exceptions=True)
            return failed, await stage.submit(3)

    failed, ok = asyncio.run(scenario())
    assert all(isinstance(e, RuntimeError) and "store failed" in str(e) for e in failed) and ok == 3


def test_the_embedding_device_follows_the_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    import server.service as service_module

    monkeypatch.setattr(service_module.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert embedding_device("auto") == "cuda" and embedding_device("cuda") == "cuda"
    assert embedding_device("cpu") == "cpu"
    monkeypatch.setattr(service_module.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert embedding_device("auto") == "cpu" and embedding_device("cuda") == "cpu"  # falls back


def test_the_pipeline_flags_reach_the_settings() -> None:
    from server.cli import build_parser, settings_from_args

    s = settings_from_args(build_parser().parse_args(["--model", "m.onnx", "--gallery", "g",
                                                      "--embed-lanes", "1", "--onnx-spin",
                                                      "--pipeline", "stages"]))
    assert (s.embed_lanes, s.onnx_spin, s.pipeline) == (1, True, "stages")
    default = settings_from_args(build_parser().parse_args(["--model", "m.onnx", "--gallery", "g"]))
    assert (default.embed_lanes, default.onnx_spin, default.pipeline) == (None, False, "auto")


@pytest.mark.parametrize("pipeline", ["lanes", "stages"])
def test_a_failing_batch_metric_does_not_fail_the_searches(make_settings: Callable[..., Settings],
                                                           pipeline: str) -> None:
    with TestClient(create_app(make_settings())) as c:
        fill_gallery(c)
    service = _open(make_settings(pipeline=pipeline))

    def broken(size: int, seconds: float) -> None:
        raise RuntimeError("metrics backend gone")

    service.metrics.observe_batch = broken  # type: ignore[method-assign]
    if service._batcher is not None:  # the stages layout hands the batcher the callback itself
        service._batcher._on_batch = broken
    found = asyncio.run(_searches(service, [crop_bytes(1), crop_bytes(2)], SearchQuery(k=3), together=True))
    assert [len(f.matches) for f in found] == [3, 3]


def test_a_form_without_a_file_upload_is_refused(client: TestClient) -> None:
    fill_gallery(client)
    before = snapshot(client)
    text = client.post("/search", data={"image": "not a file"},  # a text field, not an upload
                       files={"note": ("n.txt", b"x", "text/plain")})
    assert (text.status_code, text.json()["error"]) == (422, "invalid_parameter"), text.text
    broken = client.post("/search", content=b"--x\r\nnot a part", headers={"content-type": "multipart/form-data"})
    assert (broken.status_code, broken.json()["error"]) == (400, "bad_request"), broken.text
    assert snapshot(client) == before
