"""Analysis of finished runs (reads results files only; never runs a model)."""

from analysis.load import load_results

__all__ = ["load_results"]
