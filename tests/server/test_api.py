"""Every endpoint through FastAPI's TestClient, and every bad input: a 4xx, never a 5xx, and the
gallery exactly as it was."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.app import create_app
from server.settings import Settings
from service_data import AUTH, IDENTITY_COLOURS, add_identity, crop_array, crop_bytes, fill_gallery, snapshot


def search(client: TestClient, data: bytes, **params: object):
    return client.post("/search", files={"image": ("q.png", data, "image/png")}, params=params)


@pytest.fixture
def filled(client: TestClient) -> dict[int, list[dict]]:
    return fill_gallery(client)


# -- search -------------------------------------------------------------------------------

def test_search_ranks_the_query_identity_first(client: TestClient, filled) -> None:
    for pid in IDENTITY_COLOURS:
        answer = search(client, crop_bytes(pid, variant=99), k=8, k_identities=4).json()
        assert answer["identities"][0]["pid"] == pid
        assert [i["pid"] for i in answer["identities"]] == sorted(
            {i["pid"] for i in answer["identities"]}, key=[x["pid"] for x in answer["identities"]].index)
        assert len(answer["identities"]) == 4 and len(answer["matches"]) == 8
        assert {m["pid"] for m in answer["matches"][:2]} == {pid}
        assert answer["gallery_size"] == 8


def test_search_distances_are_the_embedders_euclidean_distances(client: TestClient, filled) -> None:
    service = client.app.state.service
    query = crop_bytes(2, variant=50)
    answer = search(client, query, k=8).json()
    xq = service.embedder.embed([query])[0]
    for match in answer["matches"]:
        stored = client.get(match["image_url"]).content
        expected = np.linalg.norm(service.embedder.embed([stored])[0] - xq)
        assert match["distance"] == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
    distances = [m["distance"] for m in answer["matches"]]
    assert distances == sorted(distances)


def test_search_filters(client: TestClient, filled) -> None:
    q = crop_bytes(1, variant=7)
    only2 = search(client, q, k=8, cameras=2).json()
    assert {m["camera"] for m in only2["matches"]} == {2} and len(only2["matches"]) == 4
    not1 = client.post("/search?k=8&exclude_cameras=1&exclude_cameras=2",
                       files={"image": ("q.png", q, "image/png")}).json()
    assert not1["matches"] == [] and not1["identities"] == []
    timed = search(client, q, k=8, time_from=20, time_to=32).json()
    assert sorted(m["timestamp"] for m in timed["matches"]) == [21.0, 22.0, 31.0, 32.0]
    near = search(client, q, k=8, max_distance=5.0).json()
    assert near["matches"] and all(m["distance"] <= 5.0 for m in near["matches"])
    assert {m["pid"] for m in near["matches"]} == {1}
    no_identities = search(client, q, k_identities=0).json()
    assert no_identities["identities"] == [] and no_identities["matches"]


def test_search_reports_timings(client: TestClient, filled) -> None:
    t = search(client, crop_bytes(3)).json()["timings"]
    assert t["batch_size"] >= 1
    assert 0 <= t["decode_ms"] <= t["total_ms"] and 0 <= t["search_ms"] <= t["total_ms"]
    assert t["decode_ms"] + t["embed_ms"] + t["search_ms"] <= t["total_ms"] + 0.01


def test_search_on_an_empty_gallery_is_empty(client: TestClient) -> None:
    answer = search(client, crop_bytes(1)).json()
    assert answer["matches"] == [] and answer["identities"] == [] and answer["gallery_size"] == 0


def test_search_without_micro_batching_gives_the_same_answer(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    answers = []
    for i, batching in enumerate((True, False)):
        with TestClient(create_app(make_settings(gallery=tmp_path / f"g{i}", micro_batching=batching))) as c:
            fill_gallery(c)
            answers.append(search(c, crop_bytes(4, variant=3), k=8).json())
            assert c.get("/readyz").json()["micro_batching"] is batching
    assert [(m["pid"], m["camera"], m["distance"]) for m in answers[0]["matches"]] == \
        [(m["pid"], m["camera"], m["distance"]) for m in answers[1]["matches"]]


# -- gallery writes -------------------------------------------------------------------------

def test_add_stores_items_and_their_crops(client: TestClient) -> None:
    items = add_identity(client, 3, [4, 5], [1.5, 2.5])
    assert [(i["pid"], i["camera"], i["timestamp"]) for i in items] == [(3, 4, 1.5), (3, 5, 2.5)]
    image = client.get(items[0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == crop_bytes(3, variant=1)  # the uploaded bytes, unchanged
    stats = client.get("/gallery/stats").json()
    assert stats["count"] == 2 and stats["identities"] == 1
    assert stats["per_camera"] == [{"camera": 4, "count": 1}, {"camera": 5, "count": 1}]


def test_add_jpeg_and_unlabelled(client: TestClient) -> None:
    r = client.post("/gallery", files=[("files", ("a.jpg", crop_bytes(2, fmt="JPEG"), "image/jpeg"))],
                    headers=AUTH)
    assert r.status_code == 201
    (item,) = r.json()["items"]
    assert item["pid"] is None and item["camera"] is None and item["path"].endswith(".jpg")
    assert client.get(item["image_url"]).headers["content-type"] == "image/jpeg"
    answer = search(client, crop_bytes(2)).json()
    assert answer["identities"] == [] and [m["id"] for m in answer["matches"]] == [item["id"]]


def test_delete_item_and_identity(client: TestClient, filled) -> None:
    service = client.app.state.service
    first = filled[1][0]
    r = client.delete(f"/gallery/{first['id']}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"removed": 1, "gallery_size": 7}
    assert client.get(first["image_url"]).status_code == 404
    assert client.delete(f"/gallery/{first['id']}", headers=AUTH).status_code == 404
    r = client.delete("/gallery", params={"pid": 2}, headers=AUTH)
    assert r.json() == {"removed": 2, "gallery_size": 5}
    assert client.delete("/gallery", params={"pid": 2}, headers=AUTH).status_code == 404
    answer = search(client, crop_bytes(2), k=8).json()
    assert 2 not in {m["pid"] for m in answer["matches"]}
    assert first["id"] not in {m["id"] for m in answer["matches"]}
    assert len(list(service.crops.root.glob("*/*"))) == 5  # removed items' crops are gone


def test_shared_crop_survives_until_its_last_item_goes(client: TestClient) -> None:
    data = crop_bytes(1)
    ids = [client.post("/gallery", files=[("files", ("a.png", data, "image/png"))], data={"pid": str(p)},
                       headers=AUTH).json()["items"][0]["id"] for p in (1, 2)]
    client.delete(f"/gallery/{ids[0]}", headers=AUTH)
    assert client.get(f"/gallery/{ids[1]}/image").content == data
    client.delete(f"/gallery/{ids[1]}", headers=AUTH)
    assert list(client.app.state.service.crops.root.glob("*/*")) == []


def test_image_of_bulk_indexed_items_only_inside_image_roots(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from index.records import ItemRecord

    root = tmp_path / "camera_crops"
    root.mkdir()
    inside = root / "0001_c1.png"
    inside.write_bytes(crop_bytes(1))
    outside = tmp_path / "secret.png"
    outside.write_bytes(crop_bytes(2))
    with TestClient(create_app(make_settings(image_roots=(root,)))) as c:
        service = c.app.state.service
        vectors = service.embedder.embed([inside, outside, inside])
        ids = service.gallery.add(vectors, [
            ItemRecord(path=str(inside), pid=1, camera=1),
            ItemRecord(path=str(outside), pid=2, camera=1),
            ItemRecord(path=str(root / ".." / "secret.png"), pid=3, camera=1),
        ]).tolist()
        assert c.get(f"/gallery/{ids[0]}/image").content == inside.read_bytes()
        for item_id in ids[1:]:
            r = c.get(f"/gallery/{item_id}/image")
            assert r.status_code == 404 and r.json()["error"] == "no_image"


# -- health, readiness, metrics, page -------------------------------------------------------

def test_health_ready_metrics_page(client: TestClient, filled) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["gallery_size"] == 8 and ready["input_size"] == [16, 8]
    search(client, crop_bytes(1))
    search(client, b"not an image")
    text = client.get("/metrics").text
    assert 'reid_http_requests_total{method="POST",route="/search",status="200"} 1.0' in text
    assert 'reid_http_requests_total{method="POST",route="/search",status="400"} 1.0' in text
    assert 'reid_http_requests_total{method="POST",route="/gallery",status="201"} 4.0' in text
    assert "reid_gallery_items 8.0" in text
    assert "reid_embed_batch_size_count" in text and "reid_search_seconds_count 1.0" in text
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/static/app.js").status_code == 200


def test_not_ready_is_503(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())  # lifespan not run: nothing loaded
    c = TestClient(app)
    assert c.get("/healthz").status_code == 200
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["error"] == "not_ready"
    assert search(c, crop_bytes(1)).status_code == 503


def test_apps_do_not_share_metrics(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(gallery=tmp_path / "a"))) as a, \
            TestClient(create_app(make_settings(gallery=tmp_path / "b"))) as b:
        a.get("/healthz")
        assert 'route="/healthz"' in a.get("/metrics").text
        assert 'route="/healthz"' not in b.get("/metrics").text


# -- bad input: 4xx with a JSON reason, gallery unchanged --------------------------------------

def _png_header_only() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop_array(1)).save(buf, format="PNG")
    return buf.getvalue()[:60]


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, format="PNG")  # ~12 KB declaring 100 M pixels
    return buf.getvalue()


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop_array(1)).save(buf, format="GIF")
    return buf.getvalue()


BAD_IMAGES = [
    ("empty", b"", 400),
    ("not_an_image", b"%PDF-1.4 definitely not a crop", 400),
    ("unsupported_format", _gif(), 415),
    ("truncated", _png_header_only(), 400),
    ("too_large", _bomb(), 413),
]


@pytest.mark.parametrize("reason,data,status", BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_bad_images_are_refused_with_their_reason(client: TestClient, filled, reason: str, data: bytes,
                                                  status: int) -> None:
    before = snapshot(client)
    r = search(client, data)
    assert (r.status_code, r.json()["error"]) == (status, reason), r.text
    good = ("files", ("ok.png", crop_bytes(1), "image/png"))
    r = client.post("/gallery", files=[good, ("files", ("bad.png", data, "image/png"))],
                    data={"pid": "9"}, headers=AUTH)
    assert (r.status_code, r.json()["error"]) == (status, reason), r.text
    assert "bad.png" in r.json()["detail"]
    assert snapshot(client) == before


def test_oversized_bodies_are_413(client: TestClient, filled) -> None:
    before = snapshot(client)
    big = np.random.default_rng(0).integers(0, 255, 100 * 1024, dtype=np.uint8).tobytes()
    r = search(client, big)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = client.post("/gallery", files=[("files", ("big.png", big, "image/png"))], headers=AUTH)
    assert r.status_code == 413

    def chunks():  # no Content-Length: the limit must be enforced while reading
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\n\r\n"
        for _ in range(100):
            yield b"\0" * 1024
        yield b"\r\n--b--\r\n"

    r = client.post("/search", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert snapshot(client) == before


@pytest.mark.parametrize("params", [
    {"k": 0}, {"k": 51}, {"k": "ten"}, {"k_identities": -1}, {"k_identities": 51},
    {"items_per_identity": 0}, {"items_per_identity": 21}, {"cameras": -1}, {"cameras": 0}, {"exclude_cameras": 0}, {"exclude_cameras": "x"},
    {"max_distance": -0.5}, {"max_distance": "nan"}, {"time_from": "inf"},
    {"time_from": 5, "time_to": 1},
])
def test_out_of_range_search_parameters_are_422(client: TestClient, filled, params: dict) -> None:
    r = search(client, crop_bytes(1), **params)
    assert r.status_code == 422, r.text


def test_missing_upload_is_422(client: TestClient) -> None:
    assert client.post("/search").status_code == 422
    assert client.post("/gallery", headers=AUTH).status_code == 422


@pytest.mark.parametrize("data", [
    {"pid": ["1", "2", "3"]}, {"camera": "-2"}, {"camera": "0"}, {"pid": "x"}, {"timestamp": "nan"}, {"pid": str(2**60)},
])
def test_bad_add_metadata_is_422(client: TestClient, filled, data: dict) -> None:
    before = snapshot(client)
    files = [("files", (f"{i}.png", crop_bytes(1, i), "image/png")) for i in range(2)]
    r = client.post("/gallery", files=files, data=data, headers=AUTH)
    assert r.status_code == 422, r.text
    assert snapshot(client) == before


def test_too_many_files_is_422(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(max_add_files=2))) as c:
        files = [("files", (f"{i}.png", crop_bytes(1, i), "image/png")) for i in range(3)]
        r = c.post("/gallery", files=files, headers=AUTH)
        assert r.status_code == 422 and "at most 2" in r.json()["detail"]
        assert c.get("/gallery/stats").json()["count"] == 0


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_writes_need_the_key(client: TestClient, filled, headers: dict) -> None:
    before = snapshot(client)
    files = [("files", ("a.png", crop_bytes(1), "image/png"))]
    for r in (client.post("/gallery", files=files, headers=headers),
              client.delete("/gallery/1", headers=headers),
              client.delete("/gallery", params={"pid": 1}, headers=headers)):
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert snapshot(client) == before


def test_writes_are_refused_without_a_configured_key(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(api_key=None))) as c:
        r = c.post("/gallery", files=[("files", ("a.png", crop_bytes(1), "image/png"))], headers=AUTH)
        assert r.status_code == 401 and "without an API key" in r.json()["detail"]


def test_unknown_items_are_404(client: TestClient) -> None:
    for r in (client.get("/gallery/12345/image"), client.delete("/gallery/12345", headers=AUTH)):
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    # An item id is digits: anything else names no resource, and never another route's path.
    for path in ("/gallery/-1/image", "/gallery/stats/image", "/gallery/x/image"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get(f"/gallery/{2**60}/image").status_code == 422  # beyond ids JSON keeps exact
    assert client.delete("/gallery", headers=AUTH).status_code == 422  # pid is required


def test_made_up_methods_share_one_metrics_label(client: TestClient) -> None:
    for i in range(3):
        client.request(f"BREW{i}", "/healthz")
    text = client.get("/metrics").text
    assert "BREW" not in text
    assert 'method="other"' in text


@pytest.mark.parametrize("method,path,allow", [
    ("OPTIONS", "/gallery/stats", "GET"),  # once answered by DELETE /gallery/{item_id}
    ("DELETE", "/gallery/stats", "GET"),
    ("GET", "/gallery", "DELETE, POST"),  # two routes share the path: both methods are listed
    ("PUT", "/gallery/5", "DELETE"),
    ("POST", "/gallery/5/image", "GET"),
    ("GET", "/search", "POST"),
])
def test_wrong_methods_are_405_listing_every_method_of_the_path(client: TestClient, method: str, path: str,
                                                                allow: str) -> None:
    r = client.request(method, path, headers=AUTH)
    assert (r.status_code, r.json()["error"], r.headers["allow"]) == (405, "method_not_allowed", allow)


def test_item_routes_keep_their_metrics_label(client: TestClient, filled) -> None:
    client.get(f"/gallery/{filled[1][0]['id']}/image")
    assert 'route="/gallery/{item_id}/image",status="200"' in client.get("/metrics").text
