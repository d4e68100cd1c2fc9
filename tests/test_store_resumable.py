"""The one resumable store: blocks written in any order, resumed after a kill, sealed and opened in one way."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line, tree

from xai_loc.data.integrity import MANIFEST, verify_store
from xai_loc.data.resumable import ResumableStore, StoreKind
from xai_loc.data.spec import SpecRecord, spec_digest
from xai_loc.errors import InputError

KIND = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")
N, CHANNELS, BLOCK = 10, 3, 3  # blocks: items 0-2, 3-5, 6-8, 9
CONFIG = {"seed": 1, "name": "toy"}


def _values() -> np.ndarray:
    """Item i holds i + 1 + channel / 10 (never zero, exact in float32)."""
    return (np.arange(N)[:, None] + 1 + np.arange(CHANNELS)[None, :] / 10).astype(np.float32)


def _open(store: ResumableStore, block: int = BLOCK) -> ResumableStore:
    coords = {"item": ("item", np.arange(N)), "label": ("item", np.full(N, np.nan))}
    return store.open_or_resume((N, CHANNELS), coords, {"config": json.dumps(CONFIG)}, block=block)


def _write(store: ResumableStore, blocks) -> None:
    for b in blocks:
        items = store.items(b)
        store.write(b, {"values": _values()[items.start:items.stop], "label": np.array(items, dtype=float) * 2})


def _build(path: Path, order) -> Path:
    with ResumableStore(path, KIND, CONFIG) as store:
        assert not store.finished("holds other toys")
        _write(_open(store), order)
        return store.finish({"summary": 1.5})








@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("ref") / "toy.zarr", [0, 1, 2, 3])


def test_written_in_order_holds_the_values_and_opens_verified(reference):
    ds = KIND.open(reference)
    np.testing.assert_array_equal(ds["values"].values, _values())
    np.testing.assert_array_equal(ds["label"].values, 2.0 * np.arange(N))
    assert ds.attrs["summary"] == 1.5 and json.loads(ds.attrs["config"]) == CONFIG
    assert ds["values"].attrs["units"] == "volts" and ds["values"].dims == ("item", "channel")
    np.testing.assert_array_equal(KIND.open_array(reference)[4], _values()[4])
    assert sorted(p.name for p in reference.parent.iterdir()) == ["toy.zarr"]  # no lock, partial or progress
    verify_store(reference, deep=True)


def test_any_order_gives_the_same_bytes(reference, tmp_path):
    assert tree(_build(tmp_path / "toy.zarr", [3, 1, 0, 2])) == tree(reference)


def test_blocks_written_from_threads_give_the_same_bytes(reference, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "toy.zarr"
    with ResumableStore(path, KIND, CONFIG) as store:
        blocks = _open(store).pending()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda b: _write(store, [b]), blocks[::-1]))
        assert store.pending() == []
        store.finish({"summary": 1.5})
    assert tree(path) == tree(reference)


def test_pending_and_progress_record_out_of_order_blocks(tmp_path):
    path = tmp_path / "toy.zarr"
    with pytest.raises(KeyboardInterrupt), ResumableStore(path, KIND, CONFIG) as store:
        _open(store)
        assert store.pending() == [0, 1, 2, 3] and list(store.items(3)) == [9]
        _write(store, [2, 0])
        assert store.pending() == [1, 3]
        raise KeyboardInterrupt
    record = json.loads(path.with_name("toy.zarr.progress.json").read_text())
    assert record == {"items_written": 3, "written": [[0, 3], [6, 9]]}
    with ResumableStore(path, KIND, CONFIG) as store:
        assert _open(store).pending() == [1, 3]
        assert _open(store, block=6).pending() == [0, 1]  # another block size: items 3-5 and 9 are missing


def test_interrupted_out_of_order_run_resumes_to_the_same_bytes(reference, tmp_path):
    path = tmp_path / "toy.zarr"
    with pytest.raises(RuntimeError), ResumableStore(path, KIND, CONFIG) as store:
        _write(_open(store), [3])  # nothing from item 0 on: kept all the same
        raise RuntimeError("worker lost")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr.lock", "toy.zarr.partial",
                                                           "toy.zarr.progress.json"]
    with ResumableStore(path, KIND, CONFIG) as store:
        assert _open(store).pending() == [0, 1, 2]
        _write(store, store.pending())
        store.finish({"summary": 1.5})
    assert tree(path) == tree(reference)


@pytest.mark.parametrize("damage", ["lost chunk", "emptied chunk", "other config", "bad range",
                                    "gap-free count too high"])
def test_unresumable_partial_is_written_afresh(reference, tmp_path, damage):
    path = tmp_path / "toy.zarr"
    with pytest.raises(KeyboardInterrupt), ResumableStore(path, KIND, CONFIG) as store:
        _write(_open(store), [0, 2])
        raise KeyboardInterrupt
    partial, progress = path.with_name("toy.zarr.partial"), path.with_name("toy.zarr.progress.json")
    if damage == "lost chunk":
        (partial / "values" / "7.0").unlink()
    elif damage == "emptied chunk":  # what a power loss leaves of a write the disk never got
        (partial / "values" / "7.0").write_bytes(b"")
    elif damage == "other config":
        attrs = json.loads((partial / ".zattrs").read_text())
        (partial / ".zattrs").write_text(json.dumps({**attrs, "config": json.dumps({**CONFIG, "seed": 2})}))
    elif damage == "bad range":
        progress.write_text(json.dumps({"items_written": 3, "written": [[0, 3], [6, 11]]}))
    else:
        progress.write_text(json.dumps({"items_written": 9, "written": [[0, 3], [6, 9]]}))
    with ResumableStore(path, KIND, CONFIG) as store:
        assert _open(store).pending() == [0, 1, 2, 3]
        _write(store, store.pending())
        store.finish({"summary": 1.5})
    assert tree(path) == tree(reference)


def test_bad_values_are_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "sub" / "toy.zarr"
    values = _values()[3:6].copy()
    values[1, 2] = np.inf
    with pytest.raises(InputError), ResumableStore(path, KIND, CONFIG) as store:
        _write(_open(store), [0])
        message = one_line(store.write, 1, {"values": values}, hint="check the toy")
        assert message == f"{path}: item 4 came out with NaN or infinite samples; nothing was stored; check the toy"
        assert "all zero (silent)" in one_line(store.write, 1, {"values": np.zeros((3, CHANNELS))})
        assert store.pending() == [1, 2, 3]
        with pytest.raises(ValueError, match="not whole blocks"):
            store.write(1, {"values": _values()[3:5]})
        with pytest.raises(ValueError, match="3 blocks are not written"):
            store.finish()
        store.write(1, {"values": values})  # a user error: nothing is kept, the next run starts afresh
    assert not (tmp_path / "sub").exists()


def test_finished_store_is_reused_refused_or_reported(reference, tmp_path):
    with ResumableStore(reference, KIND, CONFIG) as store:
        assert store.finished("holds other toys")
    with ResumableStore(reference, KIND, {**CONFIG, "seed": 2}) as store:
        assert one_line(store.finished, lambda found: f"holds seed {found['seed']}") == f"{reference} holds seed 1"
    # the identity decides what counts: a name alone does not make other data
    with ResumableStore(reference, KIND, {**CONFIG, "name": "other"}, identity=lambda c: c["seed"]) as store:
        assert store.finished("holds other toys")
    copy = Path(shutil.copytree(reference, tmp_path / "toy.zarr"))
    (copy / "values" / "2.0").unlink()
    with ResumableStore(copy, KIND, CONFIG) as store:
        assert one_line(store.finished, "x") == (f"toy store {copy} is damaged: chunk values/2.0 is missing; "
                                                  "delete it and run make_toy again to rebuild it")


def test_open_refuses_unfinished_missing_and_foreign_stores(reference, tmp_path):
    import xarray as xr

    assert one_line(KIND.open, tmp_path / "toy.zarr.partial") == (
        f"{tmp_path / 'toy.zarr.partial'} is an unfinished toy store; run make_toy again to complete it")
    assert one_line(KIND.open, tmp_path / "none.zarr") == (
        f"toy store {str(tmp_path / 'none.zarr')!r} does not exist; create it with make_toy")
    other = StoreKind("toy store", "signals", ("item", "channel"), "volts", "make_toy")
    assert one_line(other.open, reference) == (
        f"toy store {reference} has no 'signals' variable (item, channel); is it an xai-loc toy store?")
    assert "has no 'signals' variable" in one_line(other.open_array, reference)
    plain = tmp_path / "plain.zarr"
    xr.Dataset({"values": (("item", "channel"), _values())}).to_zarr(plain, zarr_format=2)
    assert "has no manifest of its contents" in one_line(KIND.open, plain)
    assert (reference / MANIFEST).is_file()


def test_killed_with_sigkill_while_writing_backwards_then_resumed(reference, tmp_path):
    """A process killed (SIGKILL) between two writes leaves a store that the next run finishes, bytes unchanged."""
    path = tmp_path / "toy.zarr"
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_store_resumable import CONFIG, KIND, ResumableStore, _open, _write
        with ResumableStore(Path({str(path)!r}), KIND, CONFIG) as store:
            _write(_open(store), [3, 2])
            os.kill(os.getpid(), 9)
    """)
    run = subprocess.run([sys.executable, "-c", code], env={**os.environ, "XAI_LOC_THREADS": "1"})
    assert run.returncode == -signal.SIGKILL
    with ResumableStore(path, KIND, CONFIG) as store:
        assert _open(store).pending() == [0, 1]
        _write(store, store.pending())
        store.finish({"summary": 1.5})
    assert tree(path) == tree(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]


class _Spec(SpecRecord):
    def __init__(self, **fields) -> None:
        self.fields = fields

    def to_dict(self) -> dict:
        return dict(self.fields)


def test_one_digest_for_specs_configs_and_options():
    import hashlib

    record = {"b": [1, 2.5], "a": {"z": None, "y": "text"}}
    assert spec_digest(record) == hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    assert spec_digest({"a": {"y": "text", "z": None}, "b": (1, 2.5)}) == spec_digest(record)  # order, tuples
    assert spec_digest(record, 8) == spec_digest(record)[:8]
    assert spec_digest({"path": Path("x")}) == spec_digest({"path": "x"})  # other objects as text
    assert _Spec(**record).digest() == spec_digest(record)


