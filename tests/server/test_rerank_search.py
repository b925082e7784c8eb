"""``/search?rerank=true`` (k-reciprocal re-ranking of a shortlist) and multi-crop queries,
against exact oracles computed from the gallery's stored vectors and the embedder."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.app import create_app
from server.settings import Settings
from service_data import AUTH, IDENTITY_COLOURS, crop_array, crop_bytes
from training.core.evaluation import euclidean_distmat
from training.core.rerank import k_reciprocal

SHORTLIST, K1, K2, LAMBDA = 16, 4, 2, 0.3


@pytest.fixture
def rerank_client(make_settings: Callable[..., Settings]) -> TestClient:
    settings = make_settings(rerank_size=SHORTLIST, rerank_k1=K1, rerank_k2=K2, rerank_lambda=LAMBDA,
                             max_rerank_size=40)
    with TestClient(create_app(settings)) as client:
        # 4 identities x 8 noisy crops, cameras 1..4 (two crops each)
        for pid in IDENTITY_COLOURS:
            files = [("files", (f"p{pid}_{v}.png", crop_bytes(pid, variant=v), "image/png")) for v in range(8)]
            data = {"pid": str(pid), "camera": [str(1 + v % 4) for v in range(8)]}
            assert client.post("/gallery", files=files, data=data, headers=AUTH).status_code == 201
        yield client


def post_search(client: TestClient, crops: list[bytes], **params: object):
    files = [("image", (f"q{i}.png", data, "image/png")) for i, data in enumerate(crops)]
    return client.post("/search", files=files, params=params)


def expected_orders(client: TestClient, query: bytes, cameras: set[int] | None) -> tuple[list[int], list[int], dict]:
    """Plain and re-ranked id orders of the query's shortlist, computed directly: Euclidean
    shortlist over the stored vectors, then k_reciprocal on the (1 + N) subgraph."""
    service = client.app.state.service
    stored = service.gallery.vectors()
    items = {item.id: item for item in service.gallery.items(stored.ids.tolist())}
    keep = np.array([cameras is None or items[int(i)].camera in cameras for i in stored.ids])
    ids, xb = stored.ids[keep], stored.xb[keep].astype(np.float64)
    xq = service.embedder.embed([query]).astype(np.float64)
    original = euclidean_distmat(xq, xb)[0]
    shortlist = np.argsort(original, kind="stable")[:SHORTLIST]
    g = xb[shortlist]
    reranked = k_reciprocal(euclidean_distmat(xq, g), np.zeros((1, 1)), euclidean_distmat(g, g), K1, K2, LAMBDA)[0]
    order = shortlist[np.argsort(reranked, kind="stable")]
    by_id = {int(ids[j]): (float(original[j]), float(reranked[r])) for r, j in enumerate(shortlist)}
    return ids[shortlist].tolist(), ids[order].tolist(), by_id


@pytest.mark.parametrize("cameras", [None, [2, 3]])
def test_rerank_orders_the_shortlist_as_k_reciprocal_says(rerank_client: TestClient, cameras) -> None:
    query = crop_bytes(3, variant=41)
    params = {"k": SHORTLIST, "k_identities": 4, "items_per_identity": 2}
    if cameras:
        params["cameras"] = cameras
    plain_ids, reranked_ids, by_id = expected_orders(rerank_client, query, set(cameras) if cameras else None)
    assert plain_ids != reranked_ids, "the re-ranking must change this shortlist's order for the test to bite"

    plain = post_search(rerank_client, [query], **params)
    reranked = post_search(rerank_client, [query], rerank="true", **params)
    assert plain.status_code == reranked.status_code == 200, reranked.text
    plain, reranked = plain.json(), reranked.json()
    assert [m["id"] for m in plain["matches"]] == plain_ids
    assert [m["id"] for m in reranked["matches"]] == reranked_ids
    assert plain["rerank"] is None and all(m["reranked_distance"] is None for m in plain["matches"])
    assert reranked["rerank"] == {"shortlist": SHORTLIST, "k1": K1, "k2": K2, "lambda_value": LAMBDA}
    for match in reranked["matches"]:  # the original distance stays what it was; the new one is reported
        original, new = by_id[match["id"]]
        assert match["distance"] == pytest.approx(original, abs=1e-4)
        assert match["reranked_distance"] == pytest.approx(new, abs=1e-6)
    # identities in the order of their best re-ranked match, their items in re-ranked order
    first_seen = list(dict.fromkeys(m["pid"] for m in reranked["matches"]))
    assert [i["pid"] for i in reranked["identities"]] == first_seen
    for identity in reranked["identities"]:
        own = [m["id"] for m in reranked["matches"] if m["pid"] == identity["pid"]][:2]
        assert [m["id"] for m in identity["items"]] == own
        assert identity["reranked_distance"] == identity["items"][0]["reranked_distance"]


def test_rerank_max_distance_cuts_the_original_distance(rerank_client: TestClient) -> None:
    query = crop_bytes(3, variant=41)
    _, reranked_ids, by_id = expected_orders(rerank_client, query, None)
    cut = float(np.median([d for d, _ in by_id.values()]))
    answer = post_search(rerank_client, [query], rerank="true", k=SHORTLIST, max_distance=cut).json()
    assert [m["id"] for m in answer["matches"]] == [i for i in reranked_ids if by_id[i][0] <= cut]
    assert all(m["distance"] <= cut for m in answer["matches"])


def test_rerank_size_per_request(rerank_client: TestClient) -> None:
    answer = post_search(rerank_client, [crop_bytes(1, variant=5)], rerank="true", rerank_size=6, k=10).json()
    assert answer["rerank"]["shortlist"] == 6 and len(answer["matches"]) == 6


@pytest.mark.parametrize("params, detail", [
    ({"rerank_size": 5}, "only applies with rerank=true"),
    ({"rerank": "true", "rerank_size": 41}, "limit of 40"),
    ({"rerank": "true", "rerank_size": 0}, None),
])
def test_bad_rerank_parameters_are_422(rerank_client: TestClient, params: dict, detail: str | None) -> None:
    r = post_search(rerank_client, [crop_bytes(1)], **params)
    assert r.status_code == 422, r.text
    if detail:
        assert detail in r.json()["detail"]


@pytest.mark.parametrize("crops", [3, 7])  # one over the limit; and so many the form parser stops
def test_too_many_crops_are_422(make_settings: Callable[..., Settings], crops: int) -> None:
    with TestClient(create_app(make_settings(max_query_crops=2))) as client:
        r = post_search(client, [crop_bytes(1, v) for v in range(crops)])
        assert r.status_code == 422 and "at most 2" in r.json()["detail"], r.text


def test_a_multi_crop_query_searches_with_the_mean_embedding(rerank_client: TestClient) -> None:
    crops = [crop_bytes(2, variant=60 + i) for i in range(3)]
    service = rerank_client.app.state.service
    mean = service.embedder.embed(crops).mean(axis=0)
    answer = post_search(rerank_client, crops, k=8).json()
    assert answer["crops"] == 3
    stored = service.gallery.vectors([m["id"] for m in answer["matches"]])
    expected = dict(zip(stored.ids.tolist(), np.linalg.norm(stored.xb - mean, axis=1).tolist(), strict=True))
    for match in answer["matches"]:
        assert match["distance"] == pytest.approx(expected[match["id"]], rel=1e-4, abs=1e-4)
    # a bad crop among good ones refuses the whole query, naming it
    r = post_search(rerank_client, crops + [b"not an image"])
    assert r.status_code == 400


def _cast_crop(pid: int, variant: int) -> bytes:
    """A crop of test identity ``pid`` under a random per-channel light cast (x0.5 to x1.5):
    the nuisance a tracklet's crops see as the person walks through changing light."""
    rng = np.random.default_rng(5000 * pid + variant)
    image = crop_array(pid, variant).astype(np.float32) * rng.uniform(0.5, 1.5, 3)
    buf = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _average_precision(ranked_pids: list[int], pid: int) -> float:
    relevant = np.array(ranked_pids) == pid
    hits = np.cumsum(relevant)
    return float((hits[relevant] / (np.flatnonzero(relevant) + 1)).mean())


def test_four_crops_rank_their_identity_at_least_as_well_as_single_crops(
        make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings())) as client:
        for pid in IDENTITY_COLOURS:  # gallery: 6 crops per identity, each under its own light
            files = [("files", (f"{pid}_{v}.png", _cast_crop(pid, v), "image/png")) for v in range(6)]
            assert client.post("/gallery", files=files, data={"pid": str(pid)}, headers=AUTH).status_code == 201
        size = 6 * len(IDENTITY_COLOURS)
        fused_ap, single_ap = [], []
        for pid in IDENTITY_COLOURS:  # query: a tracklet of 4 crops
            crops = [_cast_crop(pid, 100 + i) for i in range(4)]
            singles = [post_search(client, [c], k=size, k_identities=0).json() for c in crops]
            fused = post_search(client, crops, k=size, k_identities=0).json()
            assert fused["crops"] == 4 and len(fused["matches"]) == size
            single_ap.append(np.mean([_average_precision([m["pid"] for m in s["matches"]], pid) for s in singles]))
            fused_ap.append(_average_precision([m["pid"] for m in fused["matches"]], pid))
        assert np.mean(single_ap) < 1.0, "single crops must err for the comparison to mean anything"
        assert np.mean(fused_ap) >= np.mean(single_ap)


def test_rerank_on_an_empty_gallery_is_empty(client: TestClient) -> None:
    answer = post_search(client, [crop_bytes(1)], rerank="true")
    assert answer.status_code == 200
    assert answer.json()["matches"] == [] and answer.json()["rerank"]["shortlist"] == 100
