"""The third adversarial round, run-directory cases: colliding prompt slugs, the run lock,
``report --out``. Each test was written to fail before its fix; data-loss cases compare the
files byte for byte afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from results.schema import is_machine_metric

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _rows(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "metrics.parquet").drop(columns=["run_id"])
    frame = frame[~frame["metric"].map(is_machine_metric)]
    keys = ["method", "prompt", "seed", "step", "metric"]
    assert not frame.duplicated(keys).any(), "duplicate rows"
    return frame.sort_values(keys).reset_index(drop=True)


# ------------------------------------- 5: colliding prompt slugs on a real prior, kill, resume

COLLIDING = ["a cat", "A cat!"]
STEPS = 6
# A run of both prompts in a child process; with KILL_AT = k the child SIGKILLs itself before
# the k-th training step of the run (counted over its cells, one worker): mid second cell.
_CHILD = (
    textwrap.dedent(
        """
    import os, signal, sys
    from benchmark.run.config import load_config
    from benchmark.run.runner import run_benchmark

    sd, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = load_config(None, [
        "measure.every=0", "eval.every=2", "eval.n_views=2", "checkpoint_every=2",
        "sd.free_text_encoder=false", "render.height=16", "render.width=16", "threads=1",
        "workers=1",
    ], prior=f"sd:{sd}", methods=["sds"], steps=@STEPS@, seeds=[0], out=out)
    calls = []

    def before_step(step):
        calls.append(step)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    run_benchmark(config, ["sds"], @PROMPTS@, argv=[], quiet=True, report=False,
                  before_step=before_step)
    """
    )
    .replace("@STEPS@", str(STEPS))
    .replace("@PROMPTS@", repr(COLLIDING))
)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    from priors.fixtures import build_sd

    root = tmp_path_factory.mktemp("sd")
    build_sd(root / "sd")
    return root / "sd"


def _child(sd: Path, out: Path, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(sd), str(out), str(kill_at)],
        env=_env(), capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip


def _only_run(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
def test_colliding_prompt_slugs_keep_their_files_and_resume_after_a_kill(sd_dir, tmp_path):
    full = _child(sd_dir, tmp_path / "full", 0)
    assert full.returncode == 0, full.stderr
    full_run = _only_run(tmp_path / "full")
    snaps = sorted(p.name for p in (full_run / "snapshots").glob("*.png"))
    # both prompts have their own snapshots at every eval step (0, 2, 4, 6): none overwritten
    assert len(snaps) == 2 * 4, snaps
    assert len({s.split("_step")[0] for s in snaps}) == 2
    # killed in the second cell (after its checkpoint at step 2), then resumed
    killed = _child(sd_dir, tmp_path / "killed", STEPS + 4)
    assert killed.returncode == -9, killed.stderr
    killed_run = _only_run(tmp_path / "killed")
    assert len(list((killed_run / "checkpoints").glob("*.pt"))) == 1
    resumed = subprocess.run(
        [sys.executable, "-m", "benchmark", "resume", str(killed_run), "--quiet", "--no-report"],
        env=_env(), capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "already finished" not in resumed.stderr
    pd.testing.assert_frame_equal(_rows(full_run), _rows(killed_run))
    assert set(_rows(killed_run)["prompt"]) == set(COLLIDING)
    assert not list((killed_run / "checkpoints").glob("*.pt"))
    # every snapshot file byte for byte the uninterrupted run's
    for name in snaps:
        a = (full_run / "snapshots" / name).read_bytes()
        assert (killed_run / "snapshots" / name).read_bytes() == a, name
    assert sorted(p.name for p in (killed_run / "snapshots").glob("*.png")) == snaps


def snapshot_tree(folder: Path) -> dict[str, bytes]:
    """relative path -> bytes of every file under ``folder`` (the byte-for-byte check)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# --------------------------- 1: scale_check never deletes a DIR/sd it did not build; args first


def _real_sd_download(root: Path) -> Path:
    """What a real SD download looks like to scale_check: model_index.json, no taesd/."""
    sd = root / "sd"
    (sd / "unet").mkdir(parents=True)
    (sd / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (sd / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00weights" * 100)
    return sd


@pytest.mark.parametrize(
    "extra",
    [
        ["--methods", "nope", "--steps", "-1"],
        ["--methods", "sds", "--steps", "1"],  # valid arguments: still refused, untouched
    ],
)
def test_scale_check_never_deletes_an_sd_download(tmp_path, capsys, extra):
    from benchmark.checks.scale_check import main

    _real_sd_download(tmp_path)
    before = snapshot_tree(tmp_path)
    assert main(["--dir", str(tmp_path), "--out", str(tmp_path / "o.json"), *extra]) == 2
    line = one_error_line(capsys)
    assert ("nope" in line) if "nope" in extra else ("untouched" in line), line
    assert snapshot_tree(tmp_path) == before


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--steps", "0"], "--steps"),
        (["--threads", "-2"], "--threads"),
        (["--probe", "-1"], "--probe"),
        (["--min-available-gb", "nan"], "--min-available-gb"),
        (["--set", "steps=-5"], "steps"),
        (["--out", "{tmp}"], "is a folder"),
        (["--out", "{tmp}/missing/x.json"], "does not exist"),
    ],
)
def test_scale_check_bad_arguments_are_one_line_before_any_work(tmp_path, capsys, argv, needle):
    from benchmark.checks.scale_check import main

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["--dir", str(tmp_path / "fresh"), *argv]) == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "fresh").exists()  # nothing built


def test_scale_check_writes_its_json_after_every_method(tmp_path, monkeypatch, capsys):
    import benchmark.checks.scale_check as sc

    sd = tmp_path / "sd"
    (sd / "taesd").mkdir(parents=True)
    (sd / "model_index.json").write_text("{}")
    out = tmp_path / "scale.json"
    monkeypatch.setattr(sc, "_available_gb", lambda: 1e9)

    def run_method(sd, method, *args):
        if method == "vsd":
            raise KeyboardInterrupt  # killed during the second method
        return {"method": method, "s_per_step": 1.0}

    monkeypatch.setattr(sc, "run_method", run_method)
    with pytest.raises(KeyboardInterrupt):
        sc.main(["--dir", str(tmp_path), "--methods", "sds,vsd", "--out", str(out)])
    import json

    assert json.loads(out.read_text())["rows"] == [{"method": "sds", "s_per_step": 1.0}]
