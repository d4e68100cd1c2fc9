"""Experiments on explanations: deletion (perturbation) curves, time-delay probes, cue probes.

Runnable experiments are registered objects (:mod:`xai_loc.experiments.registry`, base classes in
:mod:`xai_loc.experiments.base`) run on a :class:`~xai_loc.experiments.modelset.ModelSet`.
"""
