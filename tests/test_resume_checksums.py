"""Regression tests: damage to an unfinished store that still decodes is written again or refused, never sealed.

The reviewer's case: ``xai-loc simulate`` killed, one bit of a written chunk of the ``.partial`` store flipped (a sample
became 3.3e37; most single-byte flips of lz4/blosc chunks still decode), ``simulate`` again: exit 0, and the finished
store passed ``verify_store(deep=True)`` with the wrong number in it. The writer now records the size and CRC-32 of
every chunk it writes, in a journal inside the unfinished store (never in the finished one).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import dies_in_the_second_block, tree

from xai_loc.acoustics.room import ShoeBox
from xai_loc.data import store
from xai_loc.data.integrity import MANIFEST
from xai_loc.data.resumable import ResumableStore, StoreKind
from xai_loc.data.scene import Scene
from xai_loc.errors import WorkLost

KIND = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")
N, CHANNELS, BLOCK = 10, 3, 3  # blocks: items 0-2, 3-5, 6-8, 9
CONFIG = {"seed": 1, "name": "toy"}
JOURNAL = ".xai-loc-written.jsonl"  # by name: what an earlier xai-loc left has none


def _values() -> np.ndarray:
    return (np.arange(N)[:, None] + 1 + np.arange(CHANNELS)[None, :] / 10).astype(np.float32)


def _open(out: ResumableStore) -> ResumableStore:
    coords = {"item": ("item", np.arange(N)), "label": ("item", np.full(N, np.nan))}
    return out.open_or_resume((N, CHANNELS), coords, {"config": json.dumps(CONFIG)}, block=BLOCK)


def _write(out: ResumableStore, blocks) -> None:
    for b in blocks:
        items = out.items(b)
        out.write(b, {"values": _values()[items.start:items.stop], "label": np.array(items, dtype=float) * 2})


def _interrupted(path: Path, blocks) -> Path:
    """Write ``blocks`` of the toy store, then interrupt the run; return its partial store."""
    with pytest.raises(KeyboardInterrupt), ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), blocks)
        raise KeyboardInterrupt
    return path.with_name(path.name + ".partial")


def _resume(path: Path) -> list[int]:
    """Resume the toy store, write what is pending and finish it; return the blocks that were pending."""
    with ResumableStore(path, KIND, CONFIG) as out:
        pending = _open(out).pending()
        _write(out, pending)
        out.finish({"summary": 1.5})
    return pending


def _flip(chunk: Path, at: int = -1) -> None:
    """Flip one bit of a chunk file (same size; an uncompressed blosc frame still decodes, to another number)."""
    data = bytearray(chunk.read_bytes())
    data[at] ^= 0x40
    chunk.write_bytes(bytes(data))


def _read(partial: Path, name: str) -> np.ndarray:
    import zarr

    return zarr.open_group(partial, mode="r", zarr_format=2, use_consolidated=False)[name][:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "toy.zarr"
    with ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0, 1, 2, 3])
        return out.finish({"summary": 1.5})


def test_a_written_chunk_damaged_so_that_it_still_decodes_is_written_again(reference, tmp_path):
    path = tmp_path / "toy.zarr"
    partial = _interrupted(path, [0, 2])
    _flip(partial / "values" / "7.0")
    assert _read(partial, "values")[7].tolist() != _values()[7].tolist()  # decodes, to wrong numbers
    assert _resume(path) == [1, 2, 3]  # block 2 (items 6-8) again, block 0 kept
    assert tree(path) == tree(reference)
    assert not (path / JOURNAL).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]


def test_a_damaged_chunk_of_a_per_item_result_is_written_again(reference, tmp_path):
    """The per-item ``label`` (one chunk for all items, rewritten by every block): every block holding it again."""
    path = tmp_path / "toy.zarr"
    partial = _interrupted(path, [0, 2])
    _flip(partial / "label" / "0", at=16)  # item 0's label
    assert _read(partial, "label")[0] != 0.0
    assert _resume(path) == [0, 1, 2, 3]
    assert tree(path) == tree(reference)


def test_a_coordinate_written_at_creation_damaged_makes_a_fresh_store(reference, tmp_path):
    """Nothing writes the ``item`` coordinate again: the partial store is written afresh, not sealed with it."""
    path = tmp_path / "toy.zarr"
    partial = _interrupted(path, [0, 2])
    _flip(partial / "item" / "0", at=16)
    assert _read(partial, "item")[0] != 0
    assert _resume(path) == [0, 1, 2, 3]
    assert tree(path) == tree(reference)


def test_a_chunk_damaged_after_its_block_was_written_is_never_sealed(reference, tmp_path):
    path = tmp_path / "toy.zarr"
    partial = path.with_name("toy.zarr.partial")
    chunk = partial / "values" / "4.0"
    with pytest.raises(WorkLost) as lost, ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0, 1, 2, 3])
        before = chunk.read_bytes()
        _flip(chunk)
        after = chunk.read_bytes()
        out.finish({"summary": 1.5})
    assert str(lost.value) == (
        f"toy store {partial}: chunk values/4.0 has changed since it was written ({len(after)} bytes, CRC-32 "
        f"{zlib.crc32(after):08x}; written: {len(before)} bytes, {zlib.crc32(before):08x}); run the command again "
        "to write it afresh")
    assert not path.exists() and not (partial / MANIFEST).exists()
    assert _resume(path) == [1]  # the damaged block alone
    assert tree(path) == tree(reference)


def test_a_partial_store_of_an_earlier_xai_loc_resumes_as_before_then_is_checked(reference, tmp_path):
    """No journal: a chunk that no longer decodes is written again (as before); what is written from then on is
    recorded, and damaged before sealing is refused."""
    path = tmp_path / "toy.zarr"
    partial = _interrupted(path, [0, 2])
    (partial / JOURNAL).unlink(missing_ok=True)
    data = (partial / "values" / "7.0").read_bytes()
    (partial / "values" / "7.0").write_bytes(data[: len(data) // 2])  # does not decode
    with pytest.raises(WorkLost, match=r"chunk values/4\.0 has changed since it was written"), \
            ResumableStore(path, KIND, CONFIG) as out:
        assert _open(out).pending() == [1, 2, 3]
        _write(out, out.pending())
        _flip(partial / "values" / "4.0")
        out.finish()
    assert _resume(path) == [1]
    assert tree(path) == tree(reference)


def test_half_a_journal_line_left_by_a_kill_is_dropped(reference, tmp_path):
    path = tmp_path / "toy.zarr"
    partial = _interrupted(path, [0, 2])
    with open(partial / JOURNAL, "a") as journal:
        journal.write('{"written":{"values/3.0":[28,')  # killed while appending (block 1 never recorded)
    assert _resume(path) == [1, 3]
    assert tree(path) == tree(reference)


# --- the reviewer's case, through simulate_dataset ------------------------------------------------------------------

def _scene() -> Scene:
    """Two microphones, two sources, 1024-sample windows: a store in about a second."""
    return Scene(name="tiny", room=ShoeBox((4.0, 3.0, 2.5)), mics=np.array([[1.9, 1.5, 1.2], [2.1, 1.5, 1.2]]),
                 sources=np.array([[1.0, 1.0, 1.3], [3.0, 1.0, 1.3]]), splits={"test": [0, 1]}, window=1024)


def _simulate(root: Path) -> Path:
    return store.simulate_dataset(_scene(), "test", 0.15, 25.0, root=root, progress=False)


def _flip_so_that_it_decodes(chunk: Path) -> None:
    """Flip one bit of an lz4/blosc chunk such that it still decodes to as many bytes, other values."""
    from numcodecs import Blosc

    data = chunk.read_bytes()
    good = Blosc().decode(data)
    for at in range(len(data) - 1, 16, -1):
        bad = bytearray(data)
        bad[at] ^= 0x40
        try:
            out = Blosc().decode(bytes(bad))
        except Exception:  # noqa: BLE001, S112 - this flip breaks the frame: try the next byte
            continue
        if len(out) == len(good) and out != good:
            chunk.write_bytes(bytes(bad))
            return
    raise AssertionError(f"no decodable flip in {chunk}")


def test_simulate_killed_then_a_chunk_damaged_so_that_it_decodes_gives_the_bytes_of_one_run(tmp_path, monkeypatch):
    reference = _simulate(tmp_path / "ref")
    dies_in_the_second_block(monkeypatch, ResumableStore, "write", KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        _simulate(tmp_path / "run")
    monkeypatch.undo()
    final = tmp_path / "run" / reference.relative_to(tmp_path / "ref")
    partial = final.with_name(final.name + ".partial")
    _flip_so_that_it_decodes(partial / "signals" / "1.0.0")
    assert np.isfinite(_read(partial, "signals")[1]).all()
    assert _simulate(tmp_path / "run") == final
    assert tree(final) == tree(reference)
