"""Reliability: the defects adversarial testing found, one test each (the ``run`` flag cases are
rows of tests/test_cli_errors.py CASES). Most run in-process in well under a second; the two
that train (the concurrent-resume / write-error run and the dead-worker sweep) are slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.cli.commands import EXIT_USAGE, main
from core.errors import UserError, printable_line

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "render.height=16", "render.width=16", "voxel.resolution=16", "voxel.n_samples=16",
    "world.n_azimuth=4", "world.elevations=[0,30]", "world.supersample=1", "eval.every=3",
    "eval.n_views=2", "eval.snapshots=false", "measure.every=3", "measure.samples=2",
    "measure.bootstrap=0", "threads=1", "checkpoint_every=2",
    "eval.clip=none",  # no test here reads CLIP; its import costs ~5 s per child process
]  # fmt: skip


def one_error_line(capsys, code: int) -> str:
    """The call exited 2 with exactly one ``error:`` line on stderr; returns it."""
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------- 14: printable messages


def test_error_lines_escape_control_characters_and_are_cut():
    line = printable_line("a\x00b\u202ec\x1b[31md\x85e\nf\u2066g")
    assert line == "a\\x00b\\u202ec\\x1b[31md\\x85e\\nf\\u2066g"
    assert line.isprintable()
    long = printable_line("x" * 10_000)
    assert len(long) < 700 and long.endswith("... (9400 more characters)")
    assert printable_line("plain text, ünïcode ok") == "plain text, ünïcode ok"


def test_cli_prints_one_escaped_line(capsys):
    code = main(["run", "--methods", "sds,bad\u202ename\x07" + "y" * 5000, "--steps", "2"])
    line = one_error_line(capsys, code)
    assert "\\u202e" in line and "\\x07" in line and "\u202e" not in line
    assert line.isprintable() and len(line) < 800 and "more characters" in line


# ------------------------------------------------------- 3, 13: seeds; 7: typed numbers


def test_seeds_are_deduplicated_with_a_note():
    from benchmark.run.inputs import unique_seeds

    notes: list[str] = []
    assert unique_seeds([3, 0, 3, 3, 0, 1], notes.append) == [3, 0, 1]
    assert notes == ["duplicate seed 3 is used once", "duplicate seed 0 is used once"]
    assert unique_seeds([0, 1], notes.append) == [0, 1] and len(notes) == 2


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64 + 5])
def test_seed_range_is_checked_in_config_and_sweep_spec(seed):
    from benchmark.run.config import load_config
    from benchmark.sweep.spec import SweepSpec, _check_spec
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="seeds"):
        load_config(None, [f"seeds=[{seed}]"])
    spec = SweepSpec(methods=["sds"], prompts=["a red sphere"], seeds=[seed])
    with pytest.raises(ConfigError, match=r"'seeds' must lie in \[0, 2\*\*63\)"):
        _check_spec(spec)
    assert load_config(None, [f"seeds=[{2**63 - 1}]"]).seeds == [2**63 - 1]


def _float_fields(cls, prefix=""):
    """(dotted name, default) of every float field (plain, optional, in a tuple) under cls."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _float_fields(hint, f"{prefix}{f.name}.")
        elif float in (hint, *typing.get_args(hint)):
            yield f"{prefix}{f.name}", getattr(instance, f.name)


def _with(default, bad: str) -> str:
    """``bad`` as the value of a field with this default (a tuple gets it as first item)."""
    if isinstance(default, (tuple, list)):
        return "[" + ", ".join([bad, *map(str, default[1:])]) + "]"
    return bad


def test_every_float_field_of_the_run_config_rejects_nan_and_inf():
    from benchmark.run.config import RunConfig, load_config
    from core.errors import ConfigError

    fields = dict(_float_fields(RunConfig))
    expected = {"sds.guidance_scale", "optim.eps", "voxel.lr_color", "voxel.background"}
    assert expected | {"ssd.mu_lr", "camera.elevation_range"} <= set(fields)
    for name, default in fields.items():
        for bad in (".nan", ".inf", "-.inf"):
            with pytest.raises(ConfigError, match="finite number"):
                load_config(None, [f"{name}={_with(default, bad)}"])
    with pytest.raises(ConfigError, match="64-bit"):
        load_config(None, [f"steps={2**70}"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optim.eps=-1", "eps must be > 0"),
        ("optim.eps=0", "eps must be > 0"),
        ("optim.beta1=1", "beta1"),
        ("voxel.lr_density=-0.1", "learning rates"),
        ("voxel.resolution=1", "resolution"),
        ("world.view_temperature=0", "view_temperature"),
        ("world.n_azimuth=0", "n_azimuth"),
    ],
)
def test_out_of_range_numbers_are_config_errors(override, needle):
    from benchmark.run.config import load_config
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


# ---------------------------------------------------- 8: checkpoints; 9: manifest; 11


@pytest.fixture(scope="module")
def tiny_trainer():
    import torch

    from benchmark.run.config import load_config
    from benchmark.run.factories import build_prior
    from benchmark.run.trainer import CellTrainer

    torch.set_num_threads(1)
    config = load_config(None, TINY, steps=6)
    prior = build_prior(config, ["a red sphere"], torch.device("cpu"))
    return lambda: CellTrainer(config, "sds", "a red sphere", 0, prior, torch.device("cpu"))


def _saved(tmp_path: Path, source, **edit) -> Path:
    import torch

    from benchmark.run.checkpoint import CellCheckpoint, save_checkpoint

    path = tmp_path / "checkpoints" / "c.pt"
    save_checkpoint(path, CellCheckpoint(2, source.state_dict(), 4, 0.5, {}, {}))
    if edit:
        data = torch.load(path, weights_only=True)
        for key, value in edit.items():
            if value is None:
                data.pop(key)
            else:
                data[key] = value
        torch.save(data, path)
    return path


@pytest.mark.parametrize(
    "edit, needle",
    [
        ({"step": 10**9}, "outside [0, 6)"),
        ({"step": 6}, "outside [0, 6)"),
        ({"step": -7}, "step must be an integer >= 0"),
        ({"trainer": None}, "missing trainer"),
        ({"n_evals": "many"}, "n_evals must be an integer"),
        ({"train_seconds": float("nan")}, "train_seconds"),
    ],
)
def test_checkpoint_contents_are_validated(tmp_path, tiny_trainer, edit, needle):
    from benchmark.run.checkpoint import load_checkpoint

    path = _saved(tmp_path, tiny_trainer(), **edit)
    with pytest.raises(UserError) as info:
        load_checkpoint(path, steps=6)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_checkpoint_of_the_wrong_shape_is_refused_before_anything_changes(tmp_path, tiny_trainer):
    import torch

    from benchmark.run.checkpoint import load_checkpoint, load_trainer_state

    trainer = tiny_trainer()
    trainer.step(0)  # Adam has per-parameter slots now
    good = _saved(tmp_path, trainer)
    fresh = tiny_trainer()
    load_trainer_state(fresh, load_checkpoint(good, steps=6), good)  # the good one loads
    state = trainer.state_dict()
    name, tensor = next(iter(state["backbone"].items()))
    cases = {
        "shape": {**state, "backbone": {**state["backbone"], name: tensor.flatten()[1:]}},
        "missing": {**state, "backbone": {k: v for k, v in state["backbone"].items() if k != name}},
    }
    slot_state = trainer.optimizer.state_dict()
    first = next(iter(slot_state["state"]))
    slot_state["state"][first] = {**slot_state["state"][first], "exp_avg": torch.zeros(3)}
    cases["slot"] = {**state, "optimizer": slot_state}
    for case, bad_state in cases.items():
        path = _saved(tmp_path / case, trainer, trainer=bad_state)
        target = tiny_trainer()
        before = {k: v.clone() for k, v in target.backbone.state_dict().items()}
        with pytest.raises(UserError, match="does not fit this cell") as info:
            load_trainer_state(target, load_checkpoint(path, steps=6), path)
        assert str(path) in str(info.value), case
        if case != "slot":  # refused before loading: the trainer is untouched
            after = target.backbone.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before), case


@pytest.mark.parametrize("content", ["5", "null", '"text"', "[1, 2]", '{"methods": 5}'])
def test_manifest_that_is_not_an_object_is_one_line(tmp_path, capsys, content):
    from benchmark.sweep.driver import cell_finished

    run = tmp_path / "cells" / "run"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(content)
    line = one_error_line(capsys, main(["resume", str(run)]))
    assert "manifest.json is corrupt" in line or "lacks" in line, line
    assert (run / "manifest.json").read_text() == content
    assert cell_finished(tmp_path / "cells", "run") is False


def test_stale_temp_files_are_removed(tmp_path):
    from results.atomic import atomic_write_text, remove_stale_temp_files, stale_temp_files

    atomic_write_text(tmp_path / "keep.json", "{}")
    partial = tmp_path / "checkpoints" / ".c.pt.k3j2.tmp"
    partial.parent.mkdir()
    partial.write_bytes(b"\0" * 2**20)
    assert stale_temp_files(tmp_path) == [partial]
    assert remove_stale_temp_files(tmp_path) == [partial]
    assert stale_temp_files(tmp_path) == [] and (tmp_path / "keep.json").exists()


# --------------------------------------------------------------------- 1: the run lock


def test_run_lock_refuses_a_second_holder_and_names_its_pid(tmp_path):
    from benchmark.run.runlock import RunLock

    code = (
        "import sys, time; from benchmark.run.runlock import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"in use by another process \(pid {holder.pid}\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path) as lock:  # the kernel dropped the killed holder's lock
        assert lock.held
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not lock.held


# --------------------------------------------------------- 2, 5, 6, 10: other commands


def test_make_fixtures_refuses_a_non_empty_target(tmp_path, capsys):
    precious = tmp_path / "dpt" / "my_model.safetensors"
    precious.parent.mkdir()
    precious.write_bytes(b"weights")
    line = one_error_line(capsys, main(["make-fixtures", str(tmp_path), "--only", "dpt"]))
    assert "is not empty" in line and "--force" in line and "dpt" in line
    (tmp_path / "clip").write_text("a file")
    line = one_error_line(capsys, main(["make-fixtures", str(tmp_path), "--only", "clip"]))
    assert "not a folder" in line
    assert precious.read_bytes() == b"weights"


@pytest.mark.parametrize(
    "edit, needle",
    [
        ({"steps": "abc"}, "'steps' must be an integer"),
        ({"steps": 0}, "'steps' must be an integer >= 1"),
        ({"methods": ["sds", "nope"]}, "unknown method 'nope'"),
        ({"prompts": ["a purple elephant"]}, "does not know: 'a purple elephant'"),
        ({"seeds": [2**63]}, "'seeds' must be integers in [0, 2**63)"),
        ({"overrides": ["render.height=2"]}, "is invalid"),
        ({"overrides": "render.height=16"}, "'overrides' must be a non-empty list"),
    ],
)
def test_regress_with_a_malformed_golden_file_is_exit_2(tmp_path, capsys, edit, needle):
    data = json.loads((ROOT / "tests" / "golden" / "variance.json").read_text())
    data["config"].update(edit)
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(data))
    line = one_error_line(capsys, main(["regress", "--golden", str(golden)]))
    assert needle in line and str(golden) in line, line


def _grid_spec(tmp_path: Path, values: int, keys: int = 1) -> Path:
    grid = {"sds.guidance_scale": [1.0 + i for i in range(values)]}
    if keys > 1:
        grid["sds.t_min"] = [0.02 + i * 1e-4 for i in range(values)]
    spec = {
        "name": "big",
        "methods": ["sds"],
        "prompts": ["a red sphere"],
        "seeds": [0, 1],
        "base_config": {"render": {"height": 16, "width": 16}},
        "grid": grid,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_cell_cap_and_override(tmp_path, capsys):
    spec = _grid_spec(tmp_path, 1000, keys=2)  # 2 x 1000 x 1000 = 2,000,000 cells
    started = time.perf_counter()
    line = one_error_line(capsys, main(["sweep", str(spec), "--out", str(tmp_path / "o")]))
    assert time.perf_counter() - started < 10, "the cap must be checked before building cells"
    assert "2,000,000 cells" in line and "10,000" in line and "--max-cells 2000000" in line
    assert not (tmp_path / "o").exists()
    small = _grid_spec(tmp_path, 6)  # 12 cells
    flags = ["--out", str(tmp_path / "o"), "--max-cells", "10"]
    line = one_error_line(capsys, main(["sweep", str(small), *flags]))
    assert "12 cells" in line and "--max-cells 12" in line
    line = one_error_line(capsys, main(["sweep", str(small), *flags[:2], "--max-cells", "0"]))
    assert "--max-cells must be >= 1" in line


def test_sweep_expansion_reports_progress(tmp_path, monkeypatch):
    import benchmark.sweep.spec as spec_module

    monkeypatch.setattr(spec_module, "PROGRESS_EVERY", 5)
    lines: list[str] = []
    sweep = spec_module.load_sweep(_grid_spec(tmp_path, 6), max_cells=12, progress=lines.append)
    assert len(sweep.cells) == 12
    assert [line.rsplit(": ", 1)[1] for line in lines] == [
        "5/12 cells expanded and validated",
        "10/12 cells expanded and validated",
    ]


def test_out_naming_a_file_or_unwritable_folder(tmp_path):
    from benchmark.run.inputs import check_out_dir

    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        check_out_dir(afile)
    with pytest.raises(UserError, match="cannot write to --out"):
        check_out_dir(afile / "below")
    if os.geteuid() != 0:  # root writes into read-only folders; tests/test_cli_errors uses /proc
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot write to --out"):
            check_out_dir(locked)
    assert check_out_dir(tmp_path / "new" / "runs").is_dir()
    assert list((tmp_path / "new" / "runs").iterdir()) == []


def test_check_state_lets_variable_rows_differ_in_row_count_only(tmp_path):
    """A Gaussian backbone's per-Gaussian tensors (``variable_rows``) may come back from a
    checkpoint with another row count (densification), never with other trailing dims."""
    import torch

    from benchmark.run.checkpoint import check_state

    ref = {"backbone": {"means": torch.zeros(150, 3), "background": torch.zeros(3)}}
    free = frozenset({"trainer.backbone.means"})
    grown = {"backbone": {"means": torch.zeros(529, 3), "background": torch.zeros(3)}}
    check_state(ref, grown, tmp_path / "c.pt", free_rows=free)
    with pytest.raises(UserError, match="does not fit"):
        check_state(ref, grown, tmp_path / "c.pt")  # not declared variable
    for bad in ({"means": torch.zeros(150, 4), "background": torch.zeros(3)},
                {"means": torch.zeros(150, 3), "background": torch.zeros(4)}):  # fmt: skip
        with pytest.raises(UserError, match="does not fit"):
            check_state(ref, {"backbone": bad}, tmp_path / "c.pt", free_rows=free)
