"""SSD's variance diagnostics per phi-decoder lever, on the tiny SD fixture (docs/scale.md).

    python scripts/scale_variance.py [--steps 20] [--samples 16] [--seeds 0,1]

For each setting one ``benchmark run`` of SSD on ``make-fixtures``' tiny SD (+ DPT, TAESD)
with the probe at step 0 and the last step (variant ``all``, K = --samples, the control-
variate view on); prints the last probe's ``var/all/cv_gain`` (nats of theta-space variance
the control variate removes vs the raw score term), ``cv_oracle_gain``, ``img_cv_gain``,
``log_var`` and the step's ``corr_eps_cv``, mean over seeds, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "full decoder, 64 (before)": ["sd.phi_decoder=full", "sd.phi_resolution=0"],
    "full decoder, 48": ["sd.phi_decoder=full", "sd.phi_resolution=48"],
    "tiny decoder, 64": ["sd.phi_decoder=tiny", "sd.phi_resolution=0"],
    "tiny decoder, 48 (default analogue)": ["sd.phi_decoder=tiny", "sd.phi_resolution=48"],
    "tiny decoder, 48, DPT 16": [
        "sd.phi_decoder=tiny",
        "sd.phi_resolution=48",
        "sd.depth_resolution=16",
    ],
}
KEYS = ("cv_gain", "cv_oracle_gain", "img_cv_gain", "log_var", "raw_log_var")


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=Path("scale_variance.json"))
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "benchmark", "make-fixtures", str(root / "fx"), "--only", "sd"],
            check=True,
            env=env,
            capture_output=True,
        )
        (root / "p.txt").write_text("a red sphere\n", encoding="utf-8")
        for name, sets in SETTINGS.items():
            out = root / name.replace(" ", "_").replace(",", "")
            base = [f"measure.every={args.steps}", f"measure.samples={args.samples}"]
            base += ["measure.variants=[all]", "measure.bootstrap=0", "threads=1"]
            base += ["measure.reference_samples=0", "eval.ceiling=false", "eval.snapshots=false"]
            cmd = [sys.executable, "-m", "benchmark", "run", "--prior", f"sd:{root / 'fx/sd'}"]
            cmd += ["--methods", "ssd", "--prompts", str(root / "p.txt"), "--steps"]
            cmd += [str(args.steps), "--seeds", args.seeds, "--out", str(out), "--quiet"]
            cmd += ["--no-report"]
            for item in base + sets:
                cmd += ["--set", item]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                print(name, "failed:", proc.stderr[-1500:])
                continue
            (run,) = [p for p in out.iterdir() if p.is_dir()]
            frame = pd.read_parquet(run / "metrics.parquet")  # long: step, metric, value
            last = frame[frame["step"] == args.steps]
            row = {"setting": name}
            for key in KEYS:
                values = last[last["metric"] == f"var/all/{key}"]["value"]
                row[key] = float(values.mean()) if len(values) else None
            corr = frame[frame["metric"] == "corr_eps_cv"]["value"]
            row["corr_eps_cv"] = float(corr.mean()) if len(corr) else None
            row["seconds_per_step"] = float(
                frame[frame["metric"] == "time/cpu_step"]["value"].median()
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
