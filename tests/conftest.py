"""Shared test set-up: torch runs single-threaded (faster and steadier on small machines), and every
test starts from the same global random state, so a test's inputs do not depend on which tests ran first."""
import numpy as np
import pytest
import torch
from helpers import tf32_flags

torch.set_num_threads(1)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _seeded_global_rngs(monkeypatch):
    """Seed torch's and numpy's global generators before each test (tests that need a stream seed their own), and
    keep every test on one torch thread: a user's ``XAI_LOC_THREADS`` is not read by the commands a test runs, and
    a test that sets another count leaves it to no later test."""
    monkeypatch.delenv("XAI_LOC_THREADS", raising=False)
    torch.manual_seed(0)
    np.random.seed(0)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def captured_figure(monkeypatch):
    """``capture(module) -> dict``: the next figure ``module`` would save (through its ``save_figure_pair``) is
    kept open in the returned dict under ``'fig'`` instead of being written (closed after the test: open figures
    pile up in the worker's pyplot)."""
    import matplotlib.pyplot as plt

    kept = []

    def capture(module) -> dict:
        drawn: dict = {}

        def keep(fig, stem):
            drawn["fig"] = fig
            kept.append(fig)
            return []

        monkeypatch.setattr(module, "save_figure_pair", keep)
        return drawn

    yield capture
    for fig in kept:
        plt.close(fig)


@pytest.fixture
def tf32_on():
    """TF32 allowed for the test, the flags put back afterwards (torch answers them through ``__getattr__``, which
    monkeypatch's undo does not restore in every order of tests)."""
    saved = tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="session")
def split_and_store(tmp_path_factory):
    """One test source of a tiny scene, in memory (``simulate_windows``) and as the store of the same arguments."""
    from xai_loc.acoustics.room import ShoeBox, linear_array
    from xai_loc.data import Scene, simulate_dataset, simulate_windows

    sources = np.array([[1.0, 1.5, 1.2], [2.5, 2.0, 1.3]])
    scene = Scene("tinysplit", ShoeBox((4.0, 5.0, 3.0)), linear_array(4, 0.1, (2.0, 4.0, 1.2)), sources,
                  {"test": [1]}, window=1024)
    args = (scene, "test", 0.15, 25.0)
    store = simulate_dataset(*args, root=tmp_path_factory.mktemp("split-data"), progress=False)
    return simulate_windows(*args, progress=False), store


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """A folder holding a LocCNN checkpoint (seed 1) of (0.15 s, 25 dB) under its shipped name,
    ``loccnn_t60-0.15_snr-25.safetensors`` (a study of that condition runs on it)."""
    import torch

    from xai_loc.models import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(1)
    save_checkpoint(build_model("loccnn"), root / "loccnn_t60-0.15_snr-25.safetensors",
                    {"condition": {"t60": 0.15, "snr": 25.0}})
    return root


@pytest.fixture
def no_simulation(monkeypatch):
    """Simulating the test data is the first work of a run: here it fails the test (a refusal must come first)."""
    def simulate(*args, **kwargs):
        raise AssertionError("the run started work (simulating data) before refusing its input or output")

    monkeypatch.setattr("xai_loc.data.store.simulate_dataset", simulate)
