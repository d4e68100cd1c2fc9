"""Experiments on explanations: deletion (perturbation) curves and time-delay probes."""
