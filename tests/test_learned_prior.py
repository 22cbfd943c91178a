"""The learned prior (priors/learned*.py): folder round trip offline, adapter contract, CFG
identities, exact targets against their definition, VSD's LoRA on it, the training script's
errors and resume, and the shipped error table reproduced from the shipped weights."""

from __future__ import annotations

import functools
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.cameras import look_at_origin
from core.guidance import classifier_free_guidance
from core.interfaces import PriorContext
from priors.learned import (
    ASSETS,
    LearnedPrior,
    check_learned_directory,
    parse_learned,
    save_learned,
)
from priors.learned_classes import ClassTable, build_unet, view_bin
from priors.weights import WeightsError
from tests.scripts import load_script
from world.class_targets import ExactTargets

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ("a red sphere", "a blue cube")


@pytest.fixture(scope="module")
def world():
    from world.prior import WorldPrior

    return WorldPrior(list(PROMPTS), 32, 32, distance=2.5, fovy=40.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random UNet of the shipped architecture saved as a learned-prior folder."""
    table = ClassTable(PROMPTS)
    torch.manual_seed(0)
    unet = build_unet(table.n_classes)
    with torch.no_grad():  # random but not trivially zero output
        unet.conv_out.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    return save_learned(unet, table, tmp_path_factory.mktemp("learned") / "m")


@pytest.fixture(scope="module")
def prior(folder, world):
    return LearnedPrior(folder, world, "cpu", list(PROMPTS), _exact(world))


def _exact(world):
    return lambda table: ExactTargets(table, world.references, world.alphas_cumprod)


def _ctx(prompt: str, azimuths: list[float]) -> PriorContext:
    n = len(azimuths)
    cams = look_at_origin(
        torch.full((n,), 20.0),
        torch.tensor(azimuths),
        torch.full((n,), 2.5),
        torch.full((n,), 40.0),
    )
    return PriorContext(prompt, cams)


def test_view_bins_and_table():
    assert view_bin(torch.tensor([0.0, 45.0, 135.0, 136.0, -44.9])).tolist() == [0, 1, 1, 2, 0]
    table = ClassTable(PROMPTS)
    assert table.labels("a blue cube", torch.tensor([0.0, 90.0, 180.0])).tolist() == [3, 4, 5]
    assert ClassTable.from_json(json.loads(json.dumps(table.to_json()))) == table


def test_folder_round_trip_offline_fp16(folder, prior):
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(weights).values()} == {torch.float16}
    assert check_learned_directory(folder) == folder
    assert (
        prior.unet.dtype == torch.float32 and prior.resolution == (32, 32) and prior.shape is None
    )
    assert prior.unet.config.num_class_embeds == 7


def test_bad_folders_are_one_line_errors(tmp_path, folder, world):
    with pytest.raises(WeightsError, match="not found"):
        check_learned_directory(tmp_path / "nope")
    (tmp_path / "unet").mkdir()
    with pytest.raises(WeightsError, match="unet/config.json is missing"):
        check_learned_directory(tmp_path)
    with pytest.raises(ValueError, match="no class for 'a snowman'"):
        LearnedPrior(folder, world, "cpu", ["a snowman"])
    assert parse_learned("learned") == ASSETS / "final"
    assert parse_learned("learned:/some/where") == Path("/some/where")


def test_adapter_contract_counts_and_classes(prior):
    ctx = _ctx("a blue cube", [0.0, 90.0, 180.0])
    x_t = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([10, 500, 990])
    before = prior.n_evals
    eps_c = prior.predict_branch(x_t, t, ctx, conditional=True)
    assert eps_c.shape == x_t.shape and eps_c.dtype == torch.float32
    assert prior.n_evals == before + 3
    direct = prior.unet(x_t, t, class_labels=torch.tensor([3, 4, 5])).sample
    torch.testing.assert_close(eps_c, direct, rtol=0, atol=0)
    eps_u = prior.predict_branch(x_t, t, ctx, conditional=False)
    null = prior.unet(x_t, t, class_labels=torch.full((3,), 6)).sample
    torch.testing.assert_close(eps_u, null, rtol=0, atol=0)
    # negatives get the null class
    torch.testing.assert_close(prior.predict_negative(x_t, t, ctx, "ugly"), eps_u, rtol=0, atol=0)
    rgb = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(prior.decode(prior.encode(rgb)), rgb)


@pytest.mark.parametrize("mode", ["diffusers", "dreamfusion"])
def test_cfg_identities(prior, mode):
    ctx = _ctx("a red sphere", [30.0, -100.0])
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([200, 800])
    eps_c = prior.predict_branch(x_t, t, ctx, True)
    eps_u = prior.predict_branch(x_t, t, ctx, False)
    for s in (0.0, 1.0, 7.5):
        got = prior.predict_noise(x_t, t, ctx, s, mode)
        torch.testing.assert_close(got, classifier_free_guidance(eps_c, eps_u, s, mode))
    # the two conventions' fixed points: diffusers s = 1 and dreamfusion s = 0 are eps_c
    scale_one = 1.0 if mode == "diffusers" else 0.0
    torch.testing.assert_close(prior.predict_noise(x_t, t, ctx, scale_one, mode), eps_c)
    if mode == "diffusers":  # s = 0 is the unconditional branch; s = 2 is 2 eps_c - eps_u
        torch.testing.assert_close(prior.predict_noise(x_t, t, ctx, 0.0, mode), eps_u)
        torch.testing.assert_close(prior.predict_noise(x_t, t, ctx, 2.0, mode), 2 * eps_c - eps_u)
    else:  # eps_c + s (eps_c - eps_u) = diffusers form at s + 1
        torch.testing.assert_close(
            prior.predict_noise(x_t, t, ctx, 3.0, mode),
            classifier_free_guidance(eps_c, eps_u, 4.0, "diffusers"),
        )


def test_exact_targets_match_their_definition(world):
    table = ClassTable(PROMPTS)
    targets = ExactTargets(table, world.references, world.alphas_cumprod)
    g = torch.Generator().manual_seed(4)
    x_t = torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float32)
    t = torch.tensor([50, 400, 900])
    labels = torch.tensor([1, 5, table.null])
    got = targets.eps(x_t, t, labels)
    for b in range(3):
        abar = world.alphas_cumprod[t[b]]
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        if labels[b] == table.null:  # every reference, uniform over prompts (equal counts)
            refs = targets.images
        else:
            refs = targets.images[targets.labels == labels[b]]
        d2 = ((x_t[b].flatten() - alpha * refs) ** 2).sum(1).double()
        r = torch.softmax(-d2 / (2 * sigma.double() ** 2), 0)
        x0 = (r[:, None] * refs.double()).sum(0).float()
        want = (x_t[b].flatten() - alpha * x0) / sigma
        # float32 vs float64: x0 errors ~1e-5 are amplified by alpha / sigma (~7 at t = 50)
        torch.testing.assert_close(got[b].flatten(), want, rtol=1e-3, atol=1e-3)
    # every reference's label is its prompt's block and a bin the cameras reach
    assert set(targets.labels.tolist()) == set(range(6))


def test_vsd_lora_on_learned_prior_starts_at_the_prior(prior):
    from estimators.eps_phi import LoRAEpsPhi

    phi = LoRAEpsPhi(prior, torch.Generator().manual_seed(5), rank=4, alpha=4)
    assert phi.parameters() and all(p.dtype == torch.float32 for p in phi.parameters())
    assert any(".lora_A." in n for n in phi.named_trainable())
    ctx = _ctx("a red sphere", [0.0, 170.0])
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([300, 700])
    at_init = phi.predict(x_t, t, ctx, prior)
    torch.testing.assert_close(at_init, prior.predict_branch(x_t, t, ctx, True), rtol=0, atol=1e-6)
    # the prior's own module tree carries no adapter and its class embedding is untouched
    assert type(prior.unet.class_embedding).__name__ == "Embedding"
    assert not any("lora" in n for n, _ in prior.unet.named_parameters())
    opt = torch.optim.SGD(phi.parameters(), lr=1.0)
    loss = phi.loss(x_t, t, torch.randn_like(x_t), ctx, prior, torch.tensor([False, True]))
    loss.backward()
    opt.step()
    assert not torch.equal(phi.predict(x_t, t, ctx, prior), at_init)


def test_geometry_and_exact_eps_are_the_worlds(prior, world):
    ctx = _ctx("a red sphere", [0.0])
    x_t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([400])
    depth = prior.geometry_estimator().depth(x_t, t, ctx)
    torch.testing.assert_close(depth, world.geometry_estimator().depth(x_t, t, ctx))
    exact = prior.exact_eps(x_t, t, ctx, conditional=True)
    assert exact.shape == x_t.shape and torch.isfinite(exact).all()


def _script(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "train_learned_prior.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def train_in_process():
    """The training script's ``main(argv)`` in this process, with what it sets process-wide
    (torch's thread count and global seed, the SIGTERM handler) put back afterwards."""
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    handler = signal.getsignal(signal.SIGTERM)
    yield load_script("train_learned_prior").main
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)
    signal.signal(signal.SIGTERM, handler)


BAD_ARGS = [
    (["--out", "x", "--steps", "0"], "--steps must be >= 1"),
    (["--out", "x", "--label-dropout", "1"], "--label-dropout"),
    (["--out", "x", "--early", "9", "--steps", "5"], "--early"),
    (["--out", "x", "--prompts", "/nonexistent.txt"], "prompts file not found"),
]


@pytest.mark.parametrize("args, message", BAD_ARGS)
def test_training_script_bad_args(args, message, capsys):
    """In-process: the script's argument checks exit 2 with one ``error:`` line."""
    with pytest.raises(SystemExit) as exit_:
        load_script("train_learned_prior").main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err


def test_training_script_bad_args_in_a_process():
    """The same check as a user meets it: the script run as a process."""
    args, message = BAD_ARGS[0]
    result = _script(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_training_resume_is_bit_identical(tmp_path, train_in_process, capsys):
    """Stopped at step 2 and resumed, training ends bit for bit where a straight run ends.
    The straight run, the stop and the refused restart run in this process (``main(argv)``);
    the resume is a new process, as a user's is."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red sphere\na blue cube\n")
    common = ["--prompts", str(prompts), "--batch", "4", "--early", "0", "--warmup", "1"]
    assert train_in_process(["--out", str(tmp_path / "a"), "--steps", "3", *common]) == 0
    part = ["--out", str(tmp_path / "c"), "--steps", "3", *common]
    assert train_in_process([*part, "--stop-after", "2"]) == 0
    assert "stopped at step 2" in capsys.readouterr().err
    assert train_in_process(part) == 2
    assert "pass --resume" in capsys.readouterr().err
    resumed = _script(*part, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "a" / "state" / "checkpoint.pt", weights_only=False)
    c = torch.load(tmp_path / "c" / "state" / "checkpoint.pt", weights_only=False)
    for name, value in a["unet"].items():
        assert torch.equal(value, c["unet"][name]), name


SHIPPED = [name for name in ("early", "final") if (ASSETS / name / "provenance.json").is_file()]


@functools.cache
def _training_world(prompts: tuple[str, ...]):
    """The world of a shipped checkpoint's training data (its references rendered once for
    both checkpoints of a run: about 45 s for the 3840 references of prompts/objects.txt)."""
    from core.cameras import CameraConfig
    from world.prior import WorldPrior

    distance, fovy = CameraConfig().center()
    return WorldPrior(list(prompts), 32, 32, distance, fovy)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_error_table_is_reproduced_from_the_weights(name):
    """Two cells' rows (the first prompt, the null row), recomputed from the fp16 weights as
    shipped with the provenance's seed and sample size: equal to 1e-3 relative (same draws,
    float32 arithmetic in another process)."""
    from priors.learned_error import error_table

    provenance = json.loads((ASSETS / name / "provenance.json").read_text())
    table = provenance["error_table"]
    prompts = provenance["data"]["prompts"]
    world = _training_world(tuple(prompts))
    prior = LearnedPrior(ASSETS / name, world, "cpu", prompts, _exact(world))
    rows = [0, len(prompts)]
    got = error_table(prior.unet, prior.targets, table["samples_per_cell"], table["seed"], rows)
    for row in (prompts[0], "(null)"):
        for band, value in table["rows"][row].items():
            assert got[row][band] == pytest.approx(value, rel=1e-3), (row, band)
    assert provenance["parameters"] < 2_000_000
    assert (ASSETS / name / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size < 8e6


@pytest.mark.slow
def test_every_estimator_runs_on_the_learned_prior_and_the_probe_logs_its_error(tmp_path):
    """A tiny end-to-end run (16x16, a random UNet of the shipped architecture): SDS, VSD
    (peft LoRA eps_phi) and SSD (the world's Bayes depth) train, and the probe logs
    var/prior_err beside the variance."""
    import pandas as pd

    from benchmark.checks.tiny_runs import small_run

    table = ClassTable(("a red sphere",))
    torch.manual_seed(0)
    folder = save_learned(build_unet(table.n_classes, sample_size=16), table, tmp_path / "m16")
    run = small_run(
        tmp_path / "runs",
        methods=("sds", "vsd", "ssd"),
        steps=2,
        seeds=(0,),
        every=1,
        overrides=(f"prior=learned:{folder}", "measure.bootstrap=0"),
    )
    rows = pd.read_parquet(run / "metrics.parquet")
    err = rows[rows.metric == "var/prior_err"]
    assert set(err.method) == {"sds", "vsd", "ssd"}
    assert (err.value > 0).all() and err.value.map(math.isfinite).all()
    assert set(rows[rows.metric == "psnr"].method) == {"sds", "vsd", "ssd"}


@pytest.mark.slow
def test_every_other_registered_estimator_trains_on_the_learned_prior(tmp_path):
    """The registry's other methods (negative-prompt ones on the null class, ESD's LoRA
    eps_phi, ISM/SDI's inversion through the UNet) train two steps on a random UNet of the
    shipped architecture: finite PSNR for each."""
    import pandas as pd

    from benchmark.checks.tiny_runs import small_run
    from estimators.registry import METHODS

    others = tuple(m for m in METHODS if m not in ("sds", "vsd", "ssd"))
    assert len(others) >= 8
    table = ClassTable(("a red sphere",))
    torch.manual_seed(0)
    folder = save_learned(build_unet(table.n_classes, sample_size=16), table, tmp_path / "m16")
    run = small_run(
        tmp_path / "runs",
        methods=others,
        steps=2,
        seeds=(0,),
        every=2,
        overrides=(f"prior=learned:{folder}", "measure.every=0"),
    )
    rows = pd.read_parquet(run / "metrics.parquet")
    psnr = rows[rows.metric == "psnr"]
    assert set(psnr.method) == set(others)
    assert psnr.value.map(math.isfinite).all()
