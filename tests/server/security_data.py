"""Keys and helpers shared by the access, audit and HTTPS tests."""

from __future__ import annotations

import io
from pathlib import Path

from server.keys import main as keys_main
from service_data import API_KEY, crop_bytes

READ_KEY = "read-key-0123456789abc"
READ = {"X-API-Key": READ_KEY}
WRITE = {"X-API-Key": API_KEY}


def make_key(capsys, path: Path, name: str, scope: str) -> str:
    """A new named key in keys file ``path`` (via ``reid-keys add``); returns the key."""
    assert keys_main(["add", str(path), name, "--scope", scope]) == 0
    return capsys.readouterr().out.strip()


def upload(pid: int = 1, variant: int = 50) -> dict[str, tuple[str, io.BytesIO, str]]:
    return {"image": ("query.png", io.BytesIO(crop_bytes(pid, variant=variant)), "image/png")}


def result_ids(answer: dict) -> list[int]:
    """Ids a search answer returned, as the audit log lists them (matches, then identities)."""
    items = list(answer["matches"]) + [i for ident in answer["identities"] for i in ident["items"]]
    return list(dict.fromkeys(i["id"] for i in items))
