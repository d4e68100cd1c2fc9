"""Scenes (the paper's preset and user scenes) and simulated datasets on disk."""
from xai_loc.data.scene import PAPER_CONDITIONS, SCENES, SPLITS, Scene, load_scene, paper_scene
from xai_loc.data.store import (
    SimulatedSplit,
    dataset_path,
    default_root,
    open_signals,
    simulate_dataset,
    simulate_windows,
)

__all__ = [
    "PAPER_CONDITIONS", "SCENES", "SPLITS", "Scene", "load_scene", "paper_scene",
    "SimulatedSplit", "dataset_path", "default_root", "open_signals", "simulate_dataset", "simulate_windows",
]
