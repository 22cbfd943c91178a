"""Analysis of finished runs: load, summarize, plot, report (reads results files only).

    from analysis import load_results, summarize, plot_variance
    df = load_results(["runs/<run_id>"])
    summary = summarize(df)            # Summary: .table, .paired, .wide(), .notes
    fig = plot_variance(df, "theta")   # a matplotlib Figure

Modules: load (results -> DataFrame), runs (manifest, config, snapshots), stats (t and
bootstrap CIs), cells (cell key, labels, call counters), summary (``summarize``), plots
(figures), report (HTML). Names are imported lazily, so ``import analysis`` stays cheap.
The golden regression and the tiny runs that train models live in the harness
(benchmark.checks.regress, benchmark.checks.tiny_runs).
"""

from importlib import import_module

_EXPORTS = {
    "load_results": "analysis.load",
    "summarize": "analysis.summary",
    "Summary": "analysis.summary",
    "bootstrap_mean": "analysis.stats",
    "mean_ci": "analysis.stats",
    "paired_difference": "analysis.stats",
    "plot_variance": "analysis.plots",
    "plot_convergence": "analysis.plots",
    "plot_convergence_overview": "analysis.plots",
    "plot_render_grid": "analysis.plots",
    "load_run_info": "analysis.runs",
    "config_differences": "analysis.runs",
    "write_report": "analysis.report",
    "build_report_html": "analysis.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # not core.lazy: analysis imports only results/ (tests/test_layering.py)
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
