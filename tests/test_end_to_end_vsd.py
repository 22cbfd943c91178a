"""VSD converges in the world, run as a user runs it (docs/vsd_world.md)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import load_results

REPO = Path(__file__).resolve().parents[1]

# docs/vsd_world.md: with the world defaults VSD gains 5.3..16.7 dB of held-out PSNR in 200
# steps on these prompts (SDS in the same runs: 5.7..17.8 dB); the test asks for 3 dB.
MIN_GAIN_DB = 3.0


@pytest.mark.slow
def test_cli_vsd_improves_held_out_psnr(tmp_path):
    """`run --methods sds,vsd --steps 200` on 2 prompts: VSD gains >= 3 dB on both."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a snowman\na blue cube\n")
    out = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark",
            "run",
            "--methods",
            "sds,vsd",
            "--prompts",
            str(prompts),
            "--steps",
            "200",
            "--out",
            str(out),
            "--quiet",
            "--set",
            "eval.every=200",
            "--set",
            "eval.snapshots=false",
            # One thread: the metrics are bit-identical to threads=2 (checked, see the doc),
            # and a shared 2-core box does not suffer OpenMP oversubscription (measured
            # under load ~8: 69 s with 1 thread vs 269 s with 2).
            "--set",
            "threads=1",
        ],
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    df = load_results(run)
    psnr = df[df.metric.eq("psnr")].pivot_table(
        index=["method", "prompt"], columns="step", values="value"
    )
    gain = psnr[200] - psnr[0]
    assert (gain.loc["vsd"] >= MIN_GAIN_DB).all(), gain.to_dict()
    assert (gain.loc["sds"] > 0).all(), gain.to_dict()  # same streams, sanity of the run
    assert {"phi_loss", "phi_residual_norm", "grad_norm"} <= set(df[df.method.eq("vsd")].metric)
