"""Content hashes recognise files by their bytes, not their names."""

from __future__ import annotations

import hashlib

from index.contenthash import sha256_file


def test_sha256_file_hashes_bytes(tmp_path):
    data = bytes(range(256)) * 5000  # larger than one read chunk
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "copy.jpg").write_bytes(data)
    (tmp_path / "other.jpg").write_bytes(data[:-1])
    assert sha256_file(tmp_path / "a.jpg") == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "copy.jpg") == sha256_file(tmp_path / "a.jpg")
    assert sha256_file(tmp_path / "other.jpg") != sha256_file(tmp_path / "a.jpg")
