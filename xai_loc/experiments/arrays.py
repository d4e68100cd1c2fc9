"""NumPy arrays or torch tensors: the experiments compute where their data are (issue 18).

A metric given NumPy arrays computes on the host and returns NumPy; given torch tensors, it
computes with the same float64 operations on their device and returns tensors there, so that a
GPU run brings back only its small results. These helpers tell the two apart;
:func:`xai_loc.experiments.gcc.array_ops` does the same for the GCC-PHAT estimators, whose
operations differ more.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def namespace(*arrays: Any):
    """``torch`` if any of ``arrays`` is a tensor, else ``numpy``."""
    return torch if any(isinstance(a, torch.Tensor) for a in arrays) else np


def to_host(values: Any) -> np.ndarray:
    """``values`` as a NumPy array (a tensor copied from its device)."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
