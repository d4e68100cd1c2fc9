"""Shared test set-up: torch runs single-threaded (faster and steadier on small machines)."""
import pytest
import torch

torch.set_num_threads(1)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
