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
from tests.test_reliability_round3 import one_error_line, snapshot_tree

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


# ------------------------ 2 and 11: report --out never lands on a run's files; damaged runs


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A one-cell world run with its report.html and summary.csv."""
    from benchmark.checks.tiny_runs import small_run

    out = tmp_path_factory.mktemp("small")
    return small_run(out, methods=("sds",), steps=4, seeds=(0,), every=2, report=True)


def _copy_run(run: Path, where: Path, name: str | None = None) -> Path:
    import shutil

    return Path(shutil.copytree(run, where / (name or run.name)))


def _report(*argv: str) -> int:
    from benchmark.cli.commands import main

    return main(["report", *argv])


@pytest.mark.parametrize(
    "target", ["metrics.parquet", "manifest.json", "config.yaml", "summary.csv", "snapshots/x.html"]
)
def test_report_out_on_the_runs_own_files_is_refused_untouched(small, tmp_path, capsys, target):
    run = _copy_run(small, tmp_path)
    before = snapshot_tree(run)
    assert _report(str(run), "--out", str(run / target)) == 2
    assert "error: " in one_error_line(capsys)
    assert snapshot_tree(run) == before


def test_report_of_two_runs_into_one_of_them_is_refused_untouched(small, tmp_path, capsys):
    a, b = _copy_run(small, tmp_path, "a"), _copy_run(small, tmp_path, "b")
    before = snapshot_tree(tmp_path)
    assert _report(str(a), str(b), "--out", str(b / "report.html")) == 2
    assert str(b) in one_error_line(capsys)
    assert snapshot_tree(tmp_path) == before
    # a run's own report, regenerated in place, is allowed (what the run itself writes)
    assert _report(str(a), "--out", str(a / "report.html")) == 0
    assert (a / "report.html").read_bytes().startswith(b"<!DOCTYPE html>")


def test_report_out_into_another_run_dir_is_refused(small, tmp_path, capsys):
    a, b = _copy_run(small, tmp_path, "a"), _copy_run(small, tmp_path, "b")
    before = snapshot_tree(b)
    assert _report(str(a), "--out", str(b / "report.html")) == 2
    one_error_line(capsys)
    assert snapshot_tree(b) == before


def _damage(run: Path, how: str) -> None:
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    if how == "truncated-parquet":
        (run / "metrics.parquet").write_bytes((run / "metrics.parquet").read_bytes()[:100])
    elif how == "manifest-list":
        (run / "manifest.json").write_text("[1, 2]")
    elif how == "manifest-cells-str":
        (run / "manifest.json").write_text(json.dumps({**manifest, "cells": "x"}))
    elif how == "manifest-prompts-int":
        (run / "manifest.json").write_text(json.dumps({**manifest, "prompts": 5, "methods": 7}))
    elif how == "config-list":
        (run / "config.yaml").write_text("[1, 2]\n")
    elif how == "parquet-wrong-columns":
        pd.DataFrame({"a": [1]}).to_parquet(run / "metrics.parquet")
    elif how == "parquet-no-rows":
        pd.read_parquet(run / "metrics.parquet").iloc[:0].to_parquet(run / "metrics.parquet")
    elif how == "parquet-text-values":
        frame = pd.read_parquet(run / "metrics.parquet").assign(value="x")
        frame.to_parquet(run / "metrics.parquet")


@pytest.mark.parametrize(
    "how",
    [
        "truncated-parquet", "manifest-list", "manifest-cells-str", "manifest-prompts-int",
        "config-list", "parquet-wrong-columns", "parquet-no-rows", "parquet-text-values",
    ],
)  # fmt: skip
def test_report_on_a_damaged_run_is_one_line_or_a_report(small, tmp_path, capsys, how):
    run = _copy_run(small, tmp_path)
    _damage(run, how)
    before = snapshot_tree(run)
    code = _report(str(run), "--out", str(tmp_path / "r.html"))
    if code == 2:
        assert str(run) in one_error_line(capsys)
    else:
        assert code == 0 and (tmp_path / "r.html").is_file(), capsys.readouterr().err
    assert snapshot_tree(run) == before


def test_report_when_summary_csv_cannot_be_written_is_one_line(small, tmp_path, capsys):
    (tmp_path / "summary.csv").mkdir()
    assert _report(str(small), "--out", str(tmp_path / "r.html")) == 2
    assert "summary.csv" in one_error_line(capsys)


# ------------------------------- 4 and 6: the lock is the run dir's own descriptor, not .lock


def test_a_lock_symlink_is_never_followed(tmp_path):
    from benchmark.run.runlock import RunLock

    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_bytes(b"precious\n")
    (run / ".lock").symlink_to(victim)
    with RunLock(run) as lock:
        assert lock.held
        assert victim.read_bytes() == b"precious\n"  # not truncated, no pid written into it
        assert not (run / ".lock").is_symlink()
        assert (run / ".lock").read_text().strip() == str(os.getpid())
    assert victim.read_bytes() == b"precious\n"


def test_a_deleted_or_replaced_lock_file_still_refuses_a_second_writer(tmp_path):
    from benchmark.run.runlock import RunLock
    from core.errors import UserError

    with RunLock(tmp_path) as lock:
        (tmp_path / ".lock").unlink()  # what let a second resume in
        with pytest.raises(UserError, match=r"in use by another process \(pid unknown\)"):
            RunLock(tmp_path).acquire()
        (tmp_path / ".lock").write_text("999999\n")  # a swapped file changes nothing either
        with pytest.raises(UserError, match="in use by another process"):
            RunLock(tmp_path).acquire()
        assert lock.held
    with RunLock(tmp_path) as again:
        assert again.held


def test_a_lock_fifo_does_not_hang_and_a_missing_run_dir_is_one_line(tmp_path):
    from benchmark.run.runlock import RunLock
    from core.errors import UserError

    os.mkfifo(tmp_path / ".lock")
    with RunLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(UserError, match="in use by another process"):
            RunLock(tmp_path).acquire()
    with pytest.raises(UserError, match="cannot lock run"):
        RunLock(tmp_path / "nope").acquire()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot lock run"):
        RunLock(tmp_path / "file").acquire()


# ---------------------------- 10: clip_trajectories checks everything before computing


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--out", "{tmp}"], "is a folder"),
        (["--out", "{tmp}/x.pt", "--threads", "0"], "threads"),
        (["--out", "{tmp}/x.pt", "--seed", "-1"], "seeds"),
        (["--out", "{tmp}/x.pt", "--seed", "99999999999999999999999"], "64-bit"),
        (["--out", "{tmp}/x.pt", "--at", "0,a"], "--at"),
        (["--out", "{tmp}/no/x.pt"], "no folder"),
    ],
)
def test_clip_trajectories_bad_arguments_are_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, argv, needle
):
    import benchmark.clip_trajectories as ct

    def never(*args, **kwargs):
        raise AssertionError("computed before the arguments were checked")

    monkeypatch.setattr(ct, "trajectories", never)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert ct.main(argv) == 2
    assert needle in one_error_line(capsys)


def test_clip_trajectories_writes_its_file_atomically_or_says_why(tmp_path, capsys, monkeypatch):
    import torch

    import benchmark.clip_trajectories as ct

    monkeypatch.setattr(ct, "trajectories", lambda *a, **k: {"config": {"n": 1}, "x": [1]})
    out = tmp_path / "t.pt"
    out.write_bytes(b"old")
    assert ct.main(["--out", str(out), "--steps", "1", "--at", "0,1"]) == 0
    assert torch.load(out, weights_only=True) == {"config": {"n": 1}, "x": [1]}

    # --out turned into a folder while computing: one line, the folder untouched, the
    # computed data saved elsewhere and named (hours of training are not lost)
    def blocked(*a, **k):
        out.unlink()
        (out / "inside").mkdir(parents=True)
        return {"config": {}, "x": [2]}

    monkeypatch.setattr(ct, "trajectories", blocked)
    assert ct.main(["--out", str(out), "--steps", "1", "--at", "0,1"]) == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and "saved to " in line, line
    saved = Path(line.split("saved to ")[1].split()[0].rstrip(";,"))
    assert torch.load(saved, weights_only=True)["x"] == [2]
    saved.unlink()
    assert [p.name for p in out.iterdir()] == ["inside"]


# ------------------------------------------------ 12: summary.csv of a killed run; 1e-8


def test_summary_csv_of_a_killed_run_counts_its_unfinished_cells(small, tmp_path):
    import json

    from analysis.verdict import write_summary_csv

    run = _copy_run(small, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    finished = pd.read_csv(write_summary_csv([run], tmp_path / "a.csv"))
    assert finished[["cells", "cells_ok", "cells_unfinished"]].values.tolist() == [[1, 1, 0]]
    # as a kill leaves it: status running, the cell still training is not among "cells"
    manifest.update(status="running", cells=[])
    (run / "manifest.json").write_text(json.dumps(manifest))
    killed = pd.read_csv(write_summary_csv([run], tmp_path / "b.csv"))
    assert killed[["cells", "cells_ok", "cells_unfinished"]].values.tolist() == [[1, 0, 1]]


@pytest.mark.parametrize("text, value", [("1e-8", 1e-8), ("1E2", 100.0), ("-2.5e-3", -2.5e-3)])
def test_exponent_numbers_are_numbers(text, value):
    from benchmark.run.config import load_config
    from core.errors import ConfigError

    assert load_config(None, [f"sds.guidance_scale={text}"]).sds.guidance_scale == value
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(None, ["sds.guidance_scale=1e-8x"])


# ------------------------------------------- 11: resume of a manifest naming an unknown prompt


@pytest.mark.parametrize("prompts", [["a red sphere", "a unicorn"], ["a red sphere", 5], []])
def test_resume_of_a_manifest_with_bad_prompts_is_one_line_untouched(
    small, tmp_path, capsys, prompts
):
    import json

    from benchmark.cli.commands import main

    run = _copy_run(small, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(status="running", prompts=prompts)
    (run / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot_tree(run)
    assert main(["resume", str(run), "--quiet", "--no-report"]) == 2
    assert "prompt" in one_error_line(capsys)
    after = snapshot_tree(run)
    after.pop(".lock", None)
    before.pop(".lock", None)
    assert after == before


def test_resume_accepts_the_distribution_prompts_run_accepts(tmp_path):
    """A run on a distribution prompt (world/distributions.py) can be resumed: resume checks
    the manifest's prompts against the same list as ``run`` (it once checked the single
    objects only, so an interrupted default run could not be resumed)."""
    from benchmark.run.resume import _manifest_prompts
    from world.distributions import DISTRIBUTIONS

    prompts = ["a red sphere", *DISTRIBUTIONS]
    assert _manifest_prompts(tmp_path, {"prompts": prompts}, "world") == prompts


# ---------------------------------- 11: the sweep driver when its folder turns read-only


@pytest.mark.parametrize("fail_at", [1, 2, 3])  # the first manifest, mid-sweep, the last one
def test_sweep_driver_whose_folder_turns_read_only_is_one_line(
    tmp_path, capsys, monkeypatch, fail_at
):
    import errno

    import yaml

    import benchmark.sweep.driver as driver
    from benchmark.cli.commands import main

    spec = {
        "name": "t", "methods": ["sds"], "prompts": ["a red sphere"], "seeds": [0], "steps": 2,
        "base_config": {
            "render": {"height": 16, "width": 16}, "voxel": {"resolution": 16},
            "world": {"n_azimuth": 4, "elevations": [0.0, 30.0], "supersample": 1},
            "measure": {"every": 0}, "eval": {"every": 2, "snapshots": False, "n_views": 2},
        },
    }  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    real, calls = driver._write_json, []

    def write_json(path, data):
        calls.append(path)
        if len(calls) >= fail_at:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real(path, data)

    monkeypatch.setattr(driver, "_write_json", write_json)
    out = tmp_path / "sweep"
    code = main(["sweep", str(tmp_path / "spec.yaml"), "--out", str(out), "--quiet"])
    assert code == 2
    line = one_error_line(capsys)
    assert "Read-only file system" in line and str(out) in line, line
    from benchmark.run.runlock import RunLock

    with RunLock(out) as lock:  # the driver let go of its lock
        assert lock.held


# ------------------------------------------------------- 11: make-fixtures on a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A 200 KB tmpfs (needs root and mount; skipped otherwise): a real full disk."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("name", ["dpt", "clip"])
def test_make_fixtures_on_a_full_disk_is_one_line_and_leaves_nothing_half_built(
    tiny_disk, capsys, name
):
    from benchmark.cli.commands import main

    (tiny_disk / name).mkdir()
    (tiny_disk / name / "old.txt").write_bytes(b"old fixture")
    assert main(["make-fixtures", str(tiny_disk), "--only", name, "--force"]) == 2
    assert "No space left" in one_error_line(capsys)
    # the old folder is as it was, no temp folder is left
    assert snapshot_tree(tiny_disk) == {f"{name}/old.txt": b"old fixture"}
    assert sorted(p.name for p in tiny_disk.iterdir()) == [name]


# ------------------------------------- 12: a Ray --address at a service that is not Ray


def _serve(reply: bytes | None):
    """A TCP server on 127.0.0.1 that accepts and answers ``reply`` (None: says nothing)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def loop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if reply is not None:
                conn.recv(64)
                conn.sendall(reply)
            threading.Timer(3.0, conn.close).start()

    threading.Thread(target=loop, daemon=True).start()
    return server


@pytest.mark.parametrize(
    "reply", [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"+OK redis\r\n", None]
)
def test_ray_address_at_a_non_ray_service_fails_fast(reply):
    import time

    from benchmark.sweep.executors import probe_address
    from core.errors import UserError

    server = _serve(reply)
    began = time.perf_counter()
    try:
        with pytest.raises(UserError, match="is not a Ray head"):
            probe_address(f"127.0.0.1:{server.getsockname()[1]}", timeout=1.0)
    finally:
        server.close()
    assert time.perf_counter() - began < 5


def test_ray_address_at_a_grpc_server_passes_the_probe():
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from benchmark.sweep.executors import probe_address

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        probe_address(f"127.0.0.1:{port}", timeout=5.0)
        probe_address(f"ray://127.0.0.1:{port}", timeout=5.0)
    finally:
        server.stop(0)


# ----------------------- 12: resume on a machine with another CPU count keeps the layout


def test_resume_with_fewer_cpus_keeps_the_thread_layout_and_the_numbers(
    small, tmp_path, monkeypatch
):
    import json

    import benchmark.run.parallel_cells as parallel
    from benchmark.cli.commands import main

    original = json.loads((small / "manifest.json").read_text())
    layout = (original["workers"], original["threads_per_cell"])
    run = _copy_run(small, tmp_path)
    manifest = dict(original, status="interrupted", cells=[])  # its one cell to run again
    (run / "manifest.json").write_text(json.dumps(manifest))
    other = 1 if layout[0] > 1 else 64  # another machine: auto would pick another count
    monkeypatch.setattr(parallel, "available_cpus", lambda: other)
    assert main(["resume", str(run), "--quiet", "--no-report"]) == 0
    resumed = json.loads((run / "manifest.json").read_text())
    assert (resumed["workers"], resumed["threads_per_cell"]) == layout
    pd.testing.assert_frame_equal(_rows(small), _rows(run))


# ------------------------- 7: the ceiling phase of a run: progress, and SIGTERM is exit 130


@pytest.mark.slow
def test_sigterm_while_the_ceiling_is_fitted_is_exit_130_with_a_line(tmp_path):
    import signal
    import time

    (tmp_path / "p.txt").write_text("a red sphere\n")
    env = dict(_env(), STEINBENCH_CACHE=str(tmp_path / "cache"))  # a miss: the fit runs
    sets = ["eval.ceiling=true", "render.height=16", "render.width=16", "voxel.resolution=16"]
    sets += ["measure.every=0", "threads=1"]
    cmd = [sys.executable, "-m", "benchmark", "run", "--prompts", "p.txt", "--methods", "sds"]
    cmd += ["--steps", "1000000", "--out", str(tmp_path / "runs"), "--no-report"]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    began = time.perf_counter()
    line = proc.stderr.readline()
    while line and "quality ceiling" not in line and time.perf_counter() - began < 300:
        line = proc.stderr.readline()
    assert "fit step 0 of 1,000,000" in line, line  # progress at once, not after the targets
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    assert not list((tmp_path / "runs").glob("*/metrics.parquet"))
