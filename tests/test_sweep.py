"""``python -m benchmark sweep``: strict spec, local and Ray executors with identical results,
retries of crashed cells, and resuming a sweep into its existing dir.

Cells are tiny (16x16 render, 16^3 voxels, 8 reference views, 3 steps, probe off, no
snapshots): about 0.5 s each plus ~2 s of imports per worker process.
The Ray test starts a 2-CPU local Ray cluster and stops it; it is skipped without Ray.
The sweeps that run cells are marked slow (about 20 s each on a loaded 2-core machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark.cli.commands import EXIT_CELLS_FAILED, EXIT_OK, EXIT_USAGE, main
from benchmark.sweep import INJECT_ENV, run_cell_task
from results.schema import cell_id, is_machine_metric

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "render": {"height": 16, "width": 16},
    "voxel": {"resolution": 16},
    "world": {"n_azimuth": 4, "elevations": [0.0, 30.0], "supersample": 1},
    "measure": {"every": 0},
    # no CLIP scorer: no sweep test reads it, and its import (open_clip) costs about 5 s of
    # CPU in every worker process
    "eval": {"every": 3, "snapshots": False, "n_views": 2, "clip": "none"},
}
CELLS_2X2X2 = [
    f"{m}_{p}_s{s}" for m in ("sds", "ssd") for p in ("a-red-sphere", "a-snowman") for s in (0, 1)
]


def spec(**fields) -> dict:
    base = {
        "name": "t",
        "methods": ["sds", "ssd"],
        "prompts": ["a red sphere", "a snowman"],
        "seeds": [0, 1],
        "steps": 3,
        "base_config": TINY,
    }
    return {**base, **fields}


def write_spec(folder: Path, data: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def sweep(spec_path: Path, out: Path, *flags: str) -> int:
    return main(["sweep", str(spec_path), "--out", str(out), "--quiet", *flags])


def manifest(out: Path) -> dict:
    return json.loads((out / "sweep_manifest.json").read_text(encoding="utf-8"))


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows without machine metrics (time, memory), in a canonical order."""
    keep = frame[~frame["metric"].map(is_machine_metric)]
    return keep.sort_values(["cell_id", "step", "metric"]).reset_index(drop=True)


# ----------------------------------------------------------------------------- bad input


def _bad() -> dict:
    """Each case: spec fields (or a raw text), extra CLI flags, substrings of the error."""
    return {
        "unknown-key": (spec(colour="red"), [], ["unknown config key 'colour'", "methods"]),
        "unknown-nested-key": (
            spec(resources={"num_cpu": 1}),
            [],
            ["unknown config key 'resources.num_cpu'"],
        ),
        "bad-grid-key": (spec(grid={"sds.nope": [1]}), [], ["'sds.nope'", "unknown config key"]),
        "bad-grid-value": (
            spec(grid={"sds.guidance_scale": [1.0, "abc"]}),
            [],
            ["grid 'sds.guidance_scale'", "expected a number", "'abc'"],
        ),
        "invalid-grid-value": (
            spec(grid={"render.height": [16, 2]}),
            [],
            ["grid 'render.height' = 2", "[4, 1024]"],
        ),
        "grid-not-a-list": (spec(grid={"render.height": 16}), [], ["'render.height'", "list"]),
        "grid-sweep-axis": (spec(grid={"seeds": [[0], [1]]}), [], ["grid key 'seeds'"]),
        "grid-duplicate": (spec(grid={"render.height": [16, 16]}), [], ["twice"]),
        "empty-methods": (spec(methods=[]), [], ["'methods'"]),
        "unknown-method": (spec(methods=["sds", "foo"]), [], ["unknown method 'foo'"]),
        "unknown-prompt": (spec(prompts=["a purple elephant"]), [], ["'a purple elephant'"]),
        "prompts-and-file": (spec(prompts_file="p.txt"), [], ["exactly one of"]),
        "missing-prompts-file": (
            {k: v for k, v in spec(prompts_file="nope.txt").items() if k != "prompts"},
            [],
            ["prompts file not found", "nope.txt"],
        ),
        "bad-base-config": (
            spec(base_config={"render": {"height": 2}}),
            [],
            ["base_config", "[4, 1024]"],
        ),
        "missing-base-config": (spec(base_config="nope.yaml"), [], ["base config not found"]),
        "bad-steps": (spec(steps=0), [], ["'steps'"]),
        "not-yaml": ("methods: [sds\n", [], ["not valid YAML", "line"]),
        "bad-workers": (spec(), ["--workers", "0"], ["--workers"]),
        "bad-retries": (spec(), ["--retries", "-1"], ["--retries"]),
        "address-without-ray": (spec(), ["--address", "x:1"], ["--address"]),
        "unknown-executor": (spec(), ["--executor", "dask"], ["invalid choice", "'dask'"]),
    }


BAD_CASES = sorted(_bad())


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_spec_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    data, flags, needles = _bad()[case]
    if isinstance(data, str):
        path = tmp_path / "spec.yaml"
        path.write_text(data, encoding="utf-8")
    else:
        path = write_spec(tmp_path, data)
    out = tmp_path / "out"
    assert sweep(path, out, *flags) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


def test_missing_spec_file(tmp_path, capsys):
    assert sweep(tmp_path / "nope.yaml", tmp_path / "out") == EXIT_USAGE
    assert "sweep spec not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "fields, flags, needle",
    [
        ({"colour": "red"}, [], "unknown config key 'colour'"),
        ({}, ["--executor", "dask"], "invalid choice: 'dask'"),
    ],
    ids=["unknown-key", "unknown-executor"],
)
def test_bad_input_in_a_subprocess(tmp_path, fields, flags, needle):
    path = write_spec(tmp_path, spec(**fields))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "sweep", str(path), "--out", str(out), *flags],
        cwd=REPO_ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_ray_missing_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    out = tmp_path / "out"
    assert sweep(write_spec(tmp_path, spec()), out, "--executor", "ray") == EXIT_USAGE
    assert "install the ray extra: pip install -e .[ray]" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "address, needle", [("127.0.0.1:1", "cannot reach Ray"), ("nonsense", "bad --address")]
)
def test_unreachable_ray_address_fails_fast(tmp_path, capsys, address, needle):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e .[ray])")
    out = tmp_path / "out"
    flags = ("--executor", "ray", "--address", address)
    assert sweep(write_spec(tmp_path, spec()), out, *flags) == EXIT_USAGE
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not out.exists()


def test_sweep_module_and_parser_import_neither_torch_nor_ray():
    code = (
        "import sys, benchmark.cli.commands as c, benchmark.sweep; c.build_parser(); "
        "print('torch' in sys.modules, 'ray' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False False"


def test_sweep_help():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "sweep", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--executor", "--address", "--workers", "--retries", "--out"):
        assert flag in proc.stdout


def test_example_spec_expands_to_16_validated_cells():
    from benchmark.sweep import load_sweep

    sweep_ = load_sweep(REPO_ROOT / "configs" / "sweep_example.yaml")
    assert len(sweep_.cells) == 16 and list(sweep_.grid) == ["world.view_aware"]
    assert len({c.cell_id for c in sweep_.cells}) == 16
    assert {c.config["world"]["view_aware"] for c in sweep_.cells} == {True, False}


def test_cell_ids_are_stable_and_readable():
    assert cell_id("sds", "a red sphere", 0, {}) == "sds_a-red-sphere_s0"
    a = cell_id("ssd", "a snowman", 2, {"sds.guidance_scale": 7.5, "render.height": 16})
    b = cell_id("ssd", "a snowman", 2, {"render.height": 16, "sds.guidance_scale": 7.5})
    assert a == b and a.startswith("ssd_a-snowman_s2_") and len(a) == len("ssd_a-snowman_s2_") + 8
    assert a != cell_id("ssd", "a snowman", 2, {"sds.guidance_scale": 7.0, "render.height": 16})


def test_machine_metrics_by_name():
    assert is_machine_metric("train_seconds") and is_machine_metric("var/seconds")
    assert is_machine_metric("var/fixed_camera/seconds") and is_machine_metric("time/render")
    assert is_machine_metric("mem/peak_rss_mb")
    assert not any(map(is_machine_metric, ("psnr", "var/all/log_var", "n_evals", "t")))


# ----------------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The 2 x 2 x 2 sweep on the local executor (2 worker processes)."""
    folder = tmp_path_factory.mktemp("local")
    path = write_spec(folder, spec())
    out = folder / "out"
    assert sweep(path, out, "--workers", "2") == EXIT_OK
    return path, out


@pytest.mark.slow
def test_local_sweep_writes_cells_manifest_and_combined_metrics(local_sweep):
    _, out = local_sweep
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(CELLS_2X2X2)
    info = manifest(out)
    assert info["status"] == "finished" and info["executor"] == "local"
    assert info["counts"] == {"finished": 8, "failed": 0, "pending": 0}
    assert all(c["attempts"] == 1 and c["result"] == "ok" for c in info["cells"].values())
    resolved = yaml.safe_load((out / "sweep.yaml").read_text())
    assert resolved["prompts"] == ["a red sphere", "a snowman"] and resolved["cells"] == 8
    df = pd.read_parquet(out / "metrics.parquet")
    assert sorted(df["cell_id"].unique()) == sorted(CELLS_2X2X2)
    assert set(df["method"]) == {"sds", "ssd"} and set(df["seed"]) == {0, 1}
    assert df[df.metric == "psnr"].groupby("cell_id").step.max().eq(3).all()


@pytest.mark.slow
def test_ray_sweep_equals_local_sweep(local_sweep, tmp_path, monkeypatch):
    """Also on Ray: a task that raises and a worker that dies are retried."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e .[ray])")
    path, local_out = local_sweep
    monkeypatch.setenv(INJECT_ENV, "sds_a-red-sphere_s0:1,ssd_a-snowman_s1:1:exit")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert sweep(path, tmp_path / "ray", "--executor", "ray") == EXIT_OK
        assert ray.is_initialized()  # a Ray started by the caller is left running
    finally:
        ray.shutdown()
    info = manifest(tmp_path / "ray")
    assert info["executor"] == "ray" and info["counts"]["finished"] == 8
    attempts = {cid: c["attempts"] for cid, c in info["cells"].items() if c["attempts"] > 1}
    assert attempts == {"sds_a-red-sphere_s0": 2, "ssd_a-snowman_s1": 2}
    local = comparable(pd.read_parquet(local_out / "metrics.parquet"))
    remote = comparable(pd.read_parquet(tmp_path / "ray" / "metrics.parquet"))
    assert len(local) > 0
    pd.testing.assert_frame_equal(local, remote, check_exact=True)


@pytest.mark.slow
def test_resume_runs_only_missing_cells(local_sweep, tmp_path):
    path, original = local_sweep
    out = tmp_path / "resumed"
    shutil.copytree(original, out)
    removed = "ssd_a-snowman_s1"
    shutil.rmtree(out / "cells" / removed)
    # a cell whose run was killed midway: its manifest does not say "finished"
    killed = out / "cells" / "sds_a-red-sphere_s0" / "manifest.json"
    killed.write_text(json.dumps({"status": "running"}))
    untouched = out / "cells" / "sds_a-snowman_s0" / "metrics.parquet"
    before = untouched.stat().st_mtime_ns
    assert sweep(path, out) == EXIT_OK
    cells = manifest(out)["cells"]
    ran = sorted(cid for cid, c in cells.items() if not c["skipped"])
    assert ran == sorted([removed, "sds_a-red-sphere_s0"])
    assert all(c["status"] == "finished" for c in cells.values())
    assert untouched.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(original / "metrics.parquet")),
        comparable(pd.read_parquet(out / "metrics.parquet")),
        check_exact=True,
    )


@pytest.mark.slow
def test_resume_refuses_a_different_sweep(local_sweep, tmp_path, capsys):
    _, original = local_sweep
    out = tmp_path / "other"
    shutil.copytree(original, out)
    other = write_spec(tmp_path, spec(seeds=[0, 1, 2]))
    before = (out / "sweep_manifest.json").read_bytes()
    assert sweep(other, out) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "holds a different sweep" in err and "seeds" in err
    assert (out / "sweep_manifest.json").read_bytes() == before


@pytest.mark.slow
def test_retry_recovers_crashes_and_a_persistent_crash_fails(tmp_path, monkeypatch):
    """s0 raises once, s1 always, s2's worker process dies once (the pool is rebuilt)."""
    data = spec(methods=["sds"], prompts=["a red sphere"], seeds=[0, 1, 2], retries=1)
    path = write_spec(tmp_path, data)
    out = tmp_path / "out"
    monkeypatch.setenv(INJECT_ENV, "sds_a-red-sphere_s0:1,*_s1:5,*_s2:1:exit")
    assert sweep(path, out) == EXIT_CELLS_FAILED
    cells = manifest(out)["cells"]
    flaky, broken, died = (cells[f"sds_a-red-sphere_s{s}"] for s in (0, 1, 2))
    assert flaky["status"] == "finished" and flaky["attempts"] == 2
    assert len(flaky["errors"]) == 1 and "InjectedFailure" in flaky["errors"][0]
    assert broken["status"] == "failed" and broken["attempts"] == 2 and len(broken["errors"]) == 2
    assert died["status"] == "finished" and died["attempts"] == 2
    assert "worker process died" in died["errors"][0]
    assert not (out / "cells" / "sds_a-red-sphere_s0" / "partial.txt").exists()
    finished = {"sds_a-red-sphere_s0", "sds_a-red-sphere_s2"}
    assert set(pd.read_parquet(out / "metrics.parquet").cell_id) == finished

    monkeypatch.delenv(INJECT_ENV)
    assert sweep(path, out, "--retries", "0") == EXIT_OK  # only the failed cell runs again
    cells = manifest(out)["cells"]
    assert [cid for cid, c in cells.items() if not c["skipped"]] == ["sds_a-red-sphere_s1"]
    assert cells["sds_a-red-sphere_s0"]["attempts"] == 2  # history of the earlier invocation
    assert cells["sds_a-red-sphere_s1"]["status"] == "finished"
    assert set(pd.read_parquet(out / "metrics.parquet").cell_id) == finished | {
        "sds_a-red-sphere_s1"
    }


@pytest.mark.slow
def test_a_retried_cell_continues_from_its_checkpoint(tmp_path, monkeypatch):
    """The worker dies at step 5 (checkpoint at step 4); the retry resumes at step 4 and the
    cell's metrics equal those of an uninterrupted sweep."""
    base = {**TINY, "checkpoint_every": 2}
    data = spec(methods=["sds"], prompts=["a snowman"], seeds=[0], steps=6, base_config=base)
    path = write_spec(tmp_path, data)
    assert sweep(path, tmp_path / "fresh") == EXIT_OK
    monkeypatch.setenv(INJECT_ENV, "*:1:exit5")
    out = tmp_path / "resumed"
    assert sweep(path, out) == EXIT_OK
    cell = manifest(out)["cells"]["sds_a-snowman_s0"]
    assert cell["attempts"] == 2 and "worker process died" in cell["errors"][0]
    assert cell["resumed_from_step"] == 4
    run_manifest = json.loads((out / "cells" / "sds_a-snowman_s0" / "manifest.json").read_text())
    assert run_manifest["status"] == "finished" and len(run_manifest["resumed"]) == 1
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(tmp_path / "fresh" / "metrics.parquet")),
        comparable(pd.read_parquet(out / "metrics.parquet")),
        check_exact=True,
    )


def test_a_diverged_cell_is_a_result_not_a_failure(tmp_path, monkeypatch):
    import torch

    from benchmark.run.config import RunConfig
    from benchmark.run.typed_config import from_dict, to_dict
    from estimators.sds import SDS

    original = SDS.grad

    def poisoned(self, x, t, eps, prior, ctx):
        out = original(self, x, t, eps, prior, ctx)
        if ctx.step == 1:
            out.grad = torch.full_like(out.grad, torch.nan)
        return out

    monkeypatch.setattr(SDS, "grad", poisoned)
    config = to_dict(from_dict(RunConfig, {**TINY, "steps": 3, "threads": 1}))
    task = {
        "cell_id": "sds_a-red-sphere_s0",
        "method": "sds",
        "prompt": "a red sphere",
        "seed": 0,
        "config": config,
        "cells_root": str(tmp_path),
        "attempt": 1,
    }
    result = run_cell_task(task)
    assert result["result"] == "diverged" and result["failed_step"] == 1
    run_manifest = json.loads((tmp_path / "sds_a-red-sphere_s0" / "manifest.json").read_text())
    assert run_manifest["status"] == "finished"
