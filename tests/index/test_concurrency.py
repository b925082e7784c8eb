"""Searches running in threads while another thread adds and removes."""

from __future__ import annotations

import threading
import time

import numpy as np
from gallery_data import make_population

from index.gallery import Gallery

DIM = 16


def test_searches_never_crash_or_return_removed_items(tmp_path):
    base = make_population(400, DIM, seed=1)
    extra = make_population(2000, DIM, seed=2)
    gallery = Gallery.create(tmp_path / "g", DIM, "m", checkpoint_every=300)
    alive = list(gallery.add(base.xb, base.records).tolist())
    removed_done: set[int] = set()
    guard = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]

    def writer() -> None:
        rng = np.random.default_rng(0)
        try:
            for start in range(0, len(extra.records), 40):
                if stop.is_set():
                    break
                alive.extend(gallery.add(extra.xb[start : start + 40], extra.records[start : start + 40]).tolist())
                victims = [alive.pop(int(rng.integers(len(alive)))) for _ in range(15)]
                gallery.remove(victims)
                if start % 400 == 0:
                    gallery.remove_camera(int(rng.integers(1, 5)))
                    gallery.remove_identity(int(rng.integers(12)))
                # Only now are these removals complete from a caller's point of view.
                with guard:
                    removed_done.update(victims)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            stop.set()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with guard:
                    gone = set(removed_done)
                xq = rng.standard_normal((4, DIM)).astype(np.float32)
                result = gallery.search(xq, 20, exclude_cameras=[1] if seed % 2 else None)
                returned = set(result.I[result.I >= 0].tolist())
                assert not returned & gone, f"removed ids returned: {sorted(returned & gone)[:5]}"
                assert all(m.item.id in returned for row in result.matches for m in row)
                identities = gallery.search_identities(xq, 3)
                assert not {x.item.id for row in identities for m in row for x in m.items} & gone
                gallery.stats()
                searches[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads deadlocked"
    assert not errors, errors[0]
    assert searches[0] > 10
    stats = gallery.stats()
    gallery.close()
    with Gallery.open(tmp_path / "g") as reopened:
        assert reopened.stats().count == stats.count
        assert not set(reopened.search(extra.xb[:50], 50).I.ravel().tolist()) & removed_done


def test_len_does_not_queue_behind_a_waiting_writer(tmp_path):
    # The server reads len() on its event loop: it must not wait for a long search to end
    # and a removal queued behind it to commit.
    pop = make_population(50, DIM, seed=3)
    with Gallery.create(tmp_path / "g", DIM, "m") as gallery:
        ids = gallery.add(pop.xb, pop.records)
        release = threading.Event()
        searching = threading.Event()

        def long_search() -> None:
            with gallery._rw.read():
                searching.set()
                release.wait(10)

        reader = threading.Thread(target=long_search)
        reader.start()
        searching.wait(5)
        remover = threading.Thread(target=gallery.remove, args=([int(ids[0])],))
        remover.start()
        deadline = time.monotonic() + 5
        while not gallery._rw._writers_waiting and time.monotonic() < deadline:
            time.sleep(0.001)
        assert gallery._rw._writers_waiting == 1
        sizes: list[int] = []
        counter = threading.Thread(target=lambda: sizes.append(len(gallery)))
        counter.start()
        counter.join(1.0)
        release.set()
        for t in (reader, remover, counter):
            t.join(5)
        assert sizes and sizes[0] == 50
        assert len(gallery) == 49


def test_disk_size_ignores_files_that_vanish_while_it_counts(tmp_path, monkeypatch):
    # A checkpoint or SQLite may delete a file between the folder listing and its stat;
    # stats() runs beside them without the lock and must not fail for it.
    import os

    from index import gallery as gallery_module

    (tmp_path / "kept.bin").write_bytes(b"x" * 10)
    (tmp_path / "vanishing.tmp").write_bytes(b"y" * 99)
    real_scandir = os.scandir

    class Vanishing:
        def __init__(self, entries):
            self._entries = list(entries)

        def __enter__(self):
            (tmp_path / "vanishing.tmp").unlink()  # listed, then gone before its stat
            return iter(self._entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(gallery_module.os, "scandir", lambda path: Vanishing(real_scandir(path)))
    assert gallery_module.folder_bytes(tmp_path) == 10
