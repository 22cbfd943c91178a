"""The report's figures drawn in forked processes (analysis.html.render_figures) end, whatever
SIGTERM handler the calling process has installed.

Found in CI (2026-12-08): `write_report` in a pytest worker hung for good in the pool's exit. The
pool stops idle workers with SIGTERM; a worker forked from a process with a Python-level SIGTERM
handler (a run's StopRequest, ray's driver) inherited it, survived, and the pool joined it
forever. Each round below asks for that race many times, in a child process with a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from analysis.html import FigureJob, render_figures

    if sys.argv[2] == "handler":
        signal.signal(signal.SIGTERM, lambda *_: None)  # a handler that does not exit

    def make(i):
        def draw():
            fig, ax = plt.subplots(figsize=(1, 1))
            ax.plot([0, i])
            return fig
        return draw

    jobs = [FigureJob(make(i), f"c{i}", f"a{i}", None) for i in range(4)]
    for _ in range(int(sys.argv[1])):
        errors = []
        html = render_figures(jobs, errors, workers=4)
        assert len(html) == 4 and not errors, errors
    print("ended", flush=True)
    """
)


@pytest.mark.parametrize("handler", ["handler", "default"])
def test_forked_figure_workers_end_under_an_inherited_sigterm_handler(handler):
    """40 pools of 4 workers: before the fix the first rounds hung (the pool joined a worker
    that SIGTERM no longer killed); now every round ends. Without a handler (the control) it
    always ended."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, "40", handler],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
        start_new_session=True,  # the child and its pool's workers: one group to kill
    )  # fmt: skip
    try:
        out, err = child.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        pytest.fail("render_figures hung: a forked worker outlived the pool's SIGTERM")
    assert child.returncode == 0, err[-2000:]
    assert out.strip() == "ended"
