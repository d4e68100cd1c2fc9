"""Figures and tables drawn from stored results (never recomputing anything)."""
