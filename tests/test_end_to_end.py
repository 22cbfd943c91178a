"""The main job end to end, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import load_results
from benchmark.cli.commands import main
from estimators.registry import METHODS
from results.schema import is_machine_metric

REPO = Path(__file__).resolve().parents[1]


def _only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _small_run(tmp_path: Path, name: str, seeds: str = "0", extra=()) -> pd.DataFrame:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red sphere\n")
    out = tmp_path / name
    code = main(
        [
            "run",
            "--methods",
            "sds",
            "--prompts",
            str(prompts),
            "--steps",
            "12",
            "--seeds",
            seeds,
            "--out",
            str(out),
            "--quiet",
            # the results are compared, not the report (tests/test_report.py writes one
            # through `run`); drawing its figures is most of a 12-step run's time
            "--no-report",
            "--set",
            "render.height=16",
            "--set",
            "render.width=16",
            "--set",
            "eval.every=6",
            "--set",
            "eval.n_views=2",
            "--set",
            "world.n_azimuth=8",
            "--set",
            "world.elevations=[0,30]",
            # every part of the probe (variants, bias check, control variate, twin, split,
            # bootstrap) at small sizes, the draws in two chunks: determinism, not precision
            "--set",
            "measure.samples=4",
            "--set",
            "measure.chunk=2",
            "--set",
            "measure.reference_samples=4",
            "--set",
            "measure.split=[2,2,2]",
            "--set",
            "measure.bootstrap=50",
            *extra,
        ]
    )
    assert code == 0
    return load_results(_only_run(out))


def test_same_seed_is_bit_identical_and_seeds_differ(tmp_path):
    a = _small_run(tmp_path, "a")
    b = _small_run(tmp_path, "b")
    cols = ["method", "prompt", "seed", "step", "metric"]
    a = a[~a.metric.map(is_machine_metric)].sort_values(cols).reset_index(drop=True)
    b = b[~b.metric.map(is_machine_metric)].sort_values(cols).reset_index(drop=True)
    assert len(a) > 0 and a.metric.str.startswith("var/").any()  # variance measured
    pd.testing.assert_frame_equal(
        a.drop(columns="run_id"), b.drop(columns="run_id"), check_exact=True
    )

    c = _small_run(tmp_path, "c", seeds="1")
    c = c[c.metric.eq("psnr") & c.step.eq(12)].value.iloc[0]
    assert c != a[a.metric.eq("psnr") & a.step.eq(12)].value.iloc[0]


# The main job's methods (the registry's golden rows) and three world objects, run once as a
# user runs it (a `python -m benchmark run` subprocess) and read by the two tests below.
MAIN_METHODS = [name for name, spec in METHODS.items() if spec.in_golden]
MAIN_STEPS = 50
# docs/vsd_world.md: with the world defaults VSD gains 5.3..16.7 dB of held-out PSNR in 200
# steps on these prompts; the main job's methods gain 4.95..9.06 dB in 50 steps and
# 8.57..13.66 dB in 100 (this run at 100 steps with eval.every=25, seed 0; VSD's snowman is
# the smallest gain at both). The tests ask for 3 dB in 50 steps.
MIN_GAIN_DB = 3.0


@pytest.fixture(scope="module")
def main_job(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`run --methods sds,vsd,ssd --steps 50` on 3 prompts (default config otherwise; the
    quality ceiling off: at 50 steps it is not the shipped one and would be fitted first,
    and no assertion here reads it; tests/test_ceiling.py runs it inside a run)."""
    tmp = tmp_path_factory.mktemp("main_job")
    prompts = tmp / "prompts.txt"
    prompts.write_text("# three world objects\na red sphere\r\na snowman\r\n\r\na blue cube\r\n")
    out = tmp / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark",
            "run",
            "--methods",
            ",".join(MAIN_METHODS),
            "--prompts",
            str(prompts),
            "--steps",
            str(MAIN_STEPS),
            "--no-report",
            "--set",
            "eval.ceiling=false",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, _only_run(out)


def _psnr_gain(df: pd.DataFrame) -> pd.Series:
    psnr = df[df.metric.eq("psnr")].pivot_table(
        index=["method", "prompt"], columns="step", values="value"
    )
    return psnr[MAIN_STEPS] - psnr[0]


@pytest.mark.slow
def test_main_job_improves_psnr_for_every_method(main_job):
    """The main job's methods on identical streams raise held-out PSNR by >= 3 dB on >= 2 of
    3 prompts for every method. (The family's world results are docs/family.md: Consistent3D
    does not improve without guidance, by its definition.)"""
    methods = MAIN_METHODS
    proc, run = main_job
    assert "summary" in proc.stderr and "results:" in proc.stderr  # table + run dir printed
    assert "per method" in proc.stderr  # the per-method overview (log_var, NSR, PSNR, ...)
    for name in ("config.yaml", "manifest.json", "metrics.parquet"):
        assert (run / name).is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["cells"]) == 3 * len(methods)
    snapshot = f"sds_a-snowman_s0_step{MAIN_STEPS:05d}"
    assert any(p.name.startswith(snapshot) for p in (run / "snapshots").iterdir())

    df = load_results(run)
    gain = _psnr_gain(df)
    for method in methods:
        assert (gain[method] >= MIN_GAIN_DB).sum() >= 2, (method, gain[method].to_dict())
    # common random numbers: every method saw the same timesteps at every step
    t = df[df.metric.eq("t")].pivot_table(
        index=["prompt", "step"], columns="method", values="value"
    )
    for method in methods:
        assert t[method].equals(t["sds"])
    assert set(df.metric) >= {"psnr", "t", "n_evals", "train_seconds", "grad_norm"}
    assert {"time/render", "time/prior", "time/backward", "mem/peak_rss_mb"} <= set(df.metric)
    # variance rows for every method at step 0 and the last step (measure.every=150 > 50;
    # the interior schedule is tests/test_measure.py's)
    probe = df[df.metric.eq("var/all/log_var")]
    for method in methods:
        steps = sorted(probe.loc[probe.method.eq(method), "step"].unique())
        assert steps == [0, MAIN_STEPS], (method, steps)


@pytest.mark.slow
def test_vsd_improves_held_out_psnr_on_two_prompts(main_job):
    """VSD converges in the world (docs/vsd_world.md): >= 3 dB of held-out PSNR on both
    `a snowman` and `a blue cube` in the main job, its eps_phi diagnostics logged."""
    _, run = main_job
    df = load_results(run)
    gain = _psnr_gain(df)
    vsd = gain.loc["vsd"][["a snowman", "a blue cube"]]
    assert (vsd >= MIN_GAIN_DB).all(), gain.to_dict()
    assert (gain.loc["sds"] > 0).all(), gain.to_dict()  # same streams, sanity of the run
    assert {"phi_loss", "phi_residual_norm", "grad_norm"} <= set(df[df.method.eq("vsd")].metric)
