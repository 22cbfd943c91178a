"""The third adversarial round: one test per defect, each written to fail before its fix.
Data-loss cases compare the files byte for byte afterwards. Fast and in-process unless
marked slow.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def snapshot_tree(folder: Path) -> dict[str, bytes]:
    """relative path -> bytes of every file under ``folder`` (the byte-for-byte check)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------ 3: user files are loaded without running code


class _RunsCode:
    """Unpickling this calls os.system: what a crafted --trajectories file did."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("flag", ["--trajectories", "--bank-cache"])
def test_train_world_clip_never_runs_code_from_a_user_file(tmp_path, capsys, flag):
    from evaluation.train_world_clip import main

    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    torch.save({"images": _RunsCode(marker), "seed": 0}, crafted)
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "out"), flag, str(crafted), "--steps", "1"])
    assert exc.value.code == 2
    assert "no code is loaded" in one_error_line(capsys)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_train_world_clip_reads_its_own_files(tmp_path):
    from evaluation.train_world_clip import BANK_KEYS, load_tensor_file

    path = tmp_path / "bank.pt"
    state = torch.Generator().manual_seed(3).get_state()
    data = {"seed": 0, "views": 2, "version": "3", "bank": {"true": torch.ones(2, 3)}}
    data.update(generator=state, names=["a", "b"])
    torch.save(data, path)
    back = load_tensor_file(path, "--bank-cache", BANK_KEYS)
    assert back["names"] == ["a", "b"] and torch.equal(back["bank"]["true"], torch.ones(2, 3))


# ------------------------------------------------- 10: train_world_clip checks arguments


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--steps", "0"], "--steps >= 1"),
        (["--views", "-3"], "--views >= 1"),
        (["--threads", "0"], "--threads >= 1"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**64)], "--seed"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "-1"], "--lr"),
        (["--per-batch-trajectory", "-1"], "--per-batch-trajectory"),
        (["--init", "{tmp}"], "model.safetensors"),
        (["--recheck", "note"], "--recheck"),
        (["--bank-cache", "{tmp}/no/such/bank.pt"], "--bank-cache"),
        (["--trajectories", "{tmp}/junk.pt"], "--trajectories"),
    ],
)
def test_train_world_clip_bad_arguments_are_one_line(tmp_path, capsys, argv, needle):
    from evaluation.train_world_clip import main

    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_train_world_clip_out_naming_a_file_is_refused_untouched(tmp_path, capsys):
    from evaluation.train_world_clip import main

    out = tmp_path / "out"
    out.write_bytes(b"precious")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out)])
    assert exc.value.code == 2 and "not a folder" in one_error_line(capsys)
    assert out.read_bytes() == b"precious"


# --------------------------------------------------------- 9: sdi.t_start=1 ran off the end


@pytest.mark.parametrize("t_start", [1.0, 0.9995])
def test_sdi_t_start_one_stays_inside_the_schedule(t_start):
    from estimators import EstimatorContext
    from estimators.sdi import SDI, SDIConfig
    from tests.fakes import LinearPrior

    prior = LinearPrior()
    est = SDI(SDIConfig(t_start=t_start, t_end=0.25))
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ctx = EstimatorContext(prompt="p", cameras=None, step=0, generator=torch.Generator())
    out = est.grad(x, torch.tensor([500]), torch.zeros_like(x), prior, ctx)
    assert out.diagnostics["t_used"] == 999.0
    assert bool(torch.isfinite(out.grad).all())


# ------------------------------------- 7: the ceiling is streamed, with progress and a stop

CEILING_TINY = [
    "render.height=16", "render.width=16", "voxel.resolution=16", "voxel.n_samples=16",
    "world.n_azimuth=4", "world.elevations=[0,30]", "world.supersample=1", "eval.n_views=2",
    "eval.clip=none", "measure.every=0", "threads=1",
]  # fmt: skip
CEILING_PROMPT = "a wooden table"


def _ceiling_config(steps=6, extra=()):
    from benchmark.run.config import load_config

    return load_config(None, [*CEILING_TINY, *extra], steps=steps)


def test_ceiling_targets_are_streamed_and_equal_the_whole_list_rendering():
    """The streamed targets are the renders of the flat list of every step's cameras in
    RENDER_BATCH slices (the old way), bit for bit, for a batch that does not divide 64."""
    from benchmark.streams import RandomStreams
    from core.cameras import Cameras
    from evaluation.ceiling import RENDER_BATCH, streamed_targets
    from world.objects import get_object
    from world.renderer import render_object

    config = _ceiling_config(extra=["camera.batch_size=3"])
    streams = RandomStreams(0, CEILING_PROMPT)
    obj, steps, batch = get_object(CEILING_PROMPT), 50, 3
    drawn = []

    def draw(k):
        drawn.append(k)
        return config.camera.sample(batch, streams.generator("camera", k))

    def render(cams):
        return render_object(obj, cams, 16, 16, supersample=1)["rgb"]

    stream = streamed_targets(steps, draw, render)
    first = next(stream)
    assert len(drawn) <= RENDER_BATCH // batch + 1  # nothing beyond the first chunk drawn
    pairs = [first, *stream]
    cams = [config.camera.sample(batch, streams.generator("camera", k)) for k in range(steps)]
    flat = Cameras.cat(cams)
    whole = torch.cat([render(flat[i : i + RENDER_BATCH]) for i in range(0, steps * batch, 64)])
    assert len(pairs) == steps
    for k, (c, t) in enumerate(pairs):
        assert torch.equal(c.c2w, cams[k].c2w)
        assert torch.equal(t, whole[k * batch : (k + 1) * batch])


def test_ceiling_of_a_million_steps_starts_at_once_reports_progress_and_stops():
    from benchmark.run.factories import build_backbone, build_optimizer
    from benchmark.streams import RandomStreams
    from evaluation.ceiling import CeilingStopped, compute_ceiling

    config = _ceiling_config(steps=1_000_000)
    seen, checks = [], []

    def stop():
        checks.append(1)
        return len(checks) > 3

    with pytest.raises(CeilingStopped):
        compute_ceiling(
            CEILING_PROMPT, config, torch.device("cpu"), build_backbone, build_optimizer,
            RandomStreams, stop=stop, progress=lambda k, n: seen.append((k, n)),
        )  # fmt: skip
    assert seen == [(0, 1_000_000)] and len(checks) == 4
    assert issubclass(CeilingStopped, KeyboardInterrupt)  # the CLI's exit 130


# ------------------------------------------------------ 8: an unusable ceiling cache


class _Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, config, device, generator):
        from benchmark.run.factories import build_backbone

        self.calls += 1
        return build_backbone(config, device, generator)


def _ceiling(config, cache, builder, warnings):
    from benchmark.run.factories import build_optimizer
    from benchmark.streams import RandomStreams
    from evaluation.ceiling import quality_ceiling

    return quality_ceiling(
        CEILING_PROMPT, config, torch.device("cpu"), builder, build_optimizer, RandomStreams,
        cache, warn=warnings.append,
    )  # fmt: skip


def test_ceiling_cache_that_is_a_file_or_full_warns_and_computes(tmp_path, monkeypatch):
    import errno

    import evaluation.ceiling as ceiling

    config, builder, warnings = _ceiling_config(), _Counting(), []
    a_file = tmp_path / "cache"
    a_file.write_bytes(b"not a folder")
    metrics = _ceiling(config, a_file, builder, warnings)
    assert builder.calls == 1 and math.isfinite(metrics["psnr"])
    assert len(warnings) == 1 and "without caching" in warnings[0]
    assert a_file.read_bytes() == b"not a folder"

    monkeypatch.setenv("STEINBENCH_CACHE", str(a_file))  # the default cache under a file
    same = {k: v for k, v in metrics.items() if k != "seconds"}
    again = _ceiling(config, None, builder, warnings)
    assert {k: v for k, v in again.items() if k != "seconds"} == same and builder.calls == 2

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ceiling, "atomic_write_bytes", full)
    folder, warnings = tmp_path / "full", []
    again = _ceiling(config, folder, builder, warnings)
    assert {k: v for k, v in again.items() if k != "seconds"} == same
    assert "No space left" in warnings[-1] and list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "entry, needle",
    [
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ('{"key": KEY, "metrics": "x"}', "not a JSON object"),
        ('{"key": KEY, "metrics": {"psnr": NaN, "mask_iou": 0.5}}', "psnr is not a finite"),
        ('{"key": KEY, "metrics": {"psnr": "20", "mask_iou": 0.5}}', "psnr is not a finite"),
        ('{"key": KEY, "metrics": {"psnr": true, "mask_iou": 0.5}}', "psnr is not a finite"),
        ('{"key": KEY, "metrics": {"psnr": 20.0}}', "mask_iou missing"),
        ("{not json", "not valid JSON"),
    ],
)
def test_invalid_ceiling_cache_entries_are_ignored_with_a_warning(tmp_path, entry, needle):
    from evaluation.ceiling import ceiling_key, key_hash

    config, builder, warnings = _ceiling_config(), _Counting(), []
    key = ceiling_key(CEILING_PROMPT, config, "cpu")
    path = tmp_path / f"{key_hash(key)}.json"
    path.write_text(entry.replace("KEY", json.dumps(key)))
    metrics = _ceiling(config, tmp_path, builder, warnings)
    assert builder.calls == 1 and math.isfinite(metrics["psnr"]) and metrics["mask_iou"] >= 0
    assert len(warnings) == 1 and needle in warnings[0], warnings
    assert json.loads(path.read_text())["metrics"] == metrics  # replaced by the good entry


@pytest.mark.parametrize("backbone", ["voxel", "gaussians", "hashgrid"])
def test_ceiling_key_includes_the_true_renders_background(backbone):
    from evaluation.ceiling import ceiling_key, key_hash

    white = _ceiling_config(extra=[f"backbone={backbone}"])
    black = _ceiling_config(extra=[f"backbone={backbone}", "voxel.background=[0,0,0]"])
    assert key_hash(ceiling_key("p", white, "cpu")) != key_hash(ceiling_key("p", black, "cpu"))


def test_shipped_ceilings_still_match_the_default_configuration():
    from benchmark.run.config import load_config
    from benchmark.run.prompts import read_prompts
    from evaluation.ceiling import SHIPPED_DIR, ceiling_key, key_hash
    from world.objects import known_prompts

    config = load_config(None, [])
    default = read_prompts(Path(__file__).resolve().parents[1] / "prompts" / "objects.txt")
    for prompt in dict.fromkeys([*known_prompts(), *default]):
        assert (SHIPPED_DIR / f"{key_hash(ceiling_key(prompt, config, 'cpu'))}.json").is_file()


# ------------------------------------------------ 5: cell names unique for any prompt set


def test_cell_names_are_unique_for_any_prompt_set_and_plain_names_stay():
    import random

    from results.schema import cell_id, cell_name, snapshot_name, truth_snapshot_name

    prompts = ["a cat", "A cat!", "a  cat", "a-cat", "a red sphere", "!!!", "???", "a snowman"]
    prompts += ["a cat 008bd0f0", "prompt"]  # a plain slug equal to a suffixed one
    names = {cell_name("sds", p, 0, prompts) for p in prompts}
    assert len(names) == len(prompts)
    assert len({truth_snapshot_name(p, prompts) for p in prompts}) == len(prompts)
    assert len({snapshot_name("sds", p, 0, 5, prompts) for p in prompts}) == len(prompts)
    assert len({cell_id("sds", p, 0, {"a": 1}, prompts) for p in prompts}) == len(prompts)
    # a prompt whose slug is unique in its run keeps the name old runs and the golden file use
    assert cell_name("sds", "a red sphere", 0, prompts) == "sds_a-red-sphere_s0"
    assert cell_name("sds", "a red sphere", 0) == "sds_a-red-sphere_s0"
    # stable: the same prompt gets the same suffix in any colliding set
    assert cell_name("sds", "A cat!", 0, prompts) == cell_name(
        "sds", "A cat!", 0, ["A cat!", "a cat"]
    )
    rng = random.Random(0)
    alphabet = "aA !-b"
    for _ in range(200):
        batch = list(
            {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(8)}
        )
        assert len({cell_name("m", p, 0, batch) for p in batch}) == len(batch), batch
