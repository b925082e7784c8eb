"""The search answer, built as plain data for speed, is exactly :class:`SearchResponse`'s JSON:
every field, no other, of the schema's types, also from numpy scalars and with nulls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.records import GalleryItem, IdentityMatch, Match
from index.shortlist import ShortlistParams
from server.responses import search_answer
from server.schemas import SearchResponse
from server.service import SearchOutcome, SearchTimings


def _item(i: int, *, labelled: bool = True) -> GalleryItem:
    return GalleryItem(id=i, path=f"c{i}/x_{i}.jpg" if labelled else None, pid=7 if labelled else None,
                       camera=3 if labelled else None, timestamp=12.5 if labelled else None,
                       content_hash=None, added_at=1764000000.25)


@pytest.mark.parametrize("reranked", [False, True])
def test_search_answer_is_the_schemas_json(reranked: bool) -> None:
    rd = (lambda x: np.float32(x)) if reranked else (lambda x: None)  # noqa: E731
    a, b = Match(np.float32(0.25), _item(1), rd(0.1)), Match(0.5, _item(2, labelled=False), rd(0.2))
    found = SearchOutcome(
        matches=[a, b], identities=[IdentityMatch(pid=np.int64(7), distance=np.float32(0.25), items=[a])],
        gallery_size=2, timings=SearchTimings(decode=0.001, embed=0.0025, search=0.0001, total=0.004, batch_size=3),
        rerank=ShortlistParams(100, 20, 6, 0.3) if reranked else None, crops=2)
    answer = search_answer(found)
    assert answer.media_type == "application/json"
    body = json.loads(answer.body)
    # Round trip through the schema: a missing, extra or mistyped field would not come back equal.
    assert SearchResponse.model_validate(body, strict=True).model_dump(mode="json") == body
    assert body["matches"][1] == {"id": 2, "pid": None, "camera": None, "timestamp": None, "path": None,
                                  "added_at": 1764000000.25, "image_url": "/gallery/2/image",
                                  "distance": 0.5, "reranked_distance": pytest.approx(0.2) if reranked else None}
    assert body["identities"][0]["pid"] == 7 and body["timings"]["batch_size"] == 3
    assert (body["rerank"] is not None) == reranked and body["crops"] == 2
