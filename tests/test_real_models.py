"""Real-model adapters on tiny random fixtures saved in the real on-disk formats
(``python -m benchmark make-fixtures``): the SD latent prior, VSD's LoRA eps_phi, the DPT
geometry estimator, and their user errors. CPU, offline (HF_HUB_OFFLINE=1, conftest).

The fixtures are built once per session (a few seconds) and loaded through the same code
path a user's real weights take: ``build_prior(config)`` with ``prior: sd:DIR/sd``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from benchmark.run.config import load_config
from benchmark.run.factories import build_estimator, build_prior
from benchmark.run.trainer import CellTrainer
from core.cameras import look_at_origin
from core.schedule import add_noise, alpha_sigma
from core.weighting import timestep_weight
from estimators.base import EstimatorContext
from tests import test_cli_errors as cli_errors

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
PROMPT = "a red sphere"


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory) -> Path:
    from priors.fixtures import build_sd, make_fixtures

    root = tmp_path_factory.mktemp("fixtures")
    state = torch.random.get_rng_state()
    make_fixtures(root)
    build_sd(root / "sd_v", prediction_type="v_prediction")
    assert torch.equal(state, torch.random.get_rng_state()), "fixtures touched the global RNG"
    return root


def _config(root: Path, *overrides: str, prior: str = "sd", methods=("sds", "vsd", "ssd")):
    return load_config(
        None,
        ["measure.every=0", "eval.every=1000", "sd.free_text_encoder=false", *overrides],
        prior=f"sd:{root / prior}",
        methods=list(methods),
    )


@pytest.fixture(scope="session")
def sd_prior(fixtures_dir):
    return build_prior(_config(fixtures_dir), [PROMPT], CPU)


def _cameras(azimuths=(0.0,), elevation=20.0):
    n = len(azimuths)
    ones = torch.ones(n)
    return look_at_origin(ones * elevation, torch.tensor(azimuths), ones * 2.5, ones * 40.0)


def _text_embedding_by_hand(prior, prompt: str) -> torch.Tensor:
    ids = prior.tokenizer(
        prompt, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return prior.text_encoder(ids).last_hidden_state


def test_fixture_loads_through_build_prior(sd_prior, fixtures_dir):
    from priors.stable_diffusion import StableDiffusionPrior

    assert isinstance(sd_prior, StableDiffusionPrior)
    assert sd_prior.shape == (4, 8, 8) and sd_prior.resolution == 64
    assert sd_prior.dtype == torch.float32 and sd_prior.prediction_type == "epsilon"
    assert sd_prior.num_train_timesteps == 1000
    for module in (sd_prior.unet, sd_prior.vae, sd_prior.text_encoder):
        assert not any(p.requires_grad for p in module.parameters())
    x = sd_prior.encode(torch.rand(2, 3, 32, 32, requires_grad=True))
    assert x.shape == (2, 4, 8, 8) and x.dtype == torch.float32 and x.requires_grad
    # the real CLIP BPE from vocab.json + merges.txt (the layout of real SD repos)
    assert prior_ids(sd_prior, "a red sphere") == [49406, 320, 736, 6987, 49407]
    # SSD's depth model was found at DIR/sd/depth and cached on the prior
    assert any(key.startswith("dpt:") for key in sd_prior.auxiliary)


def prior_ids(prior, text: str) -> list[int]:
    return prior.tokenizer(text).input_ids


def test_fp16_variant_only_directory_loads(fixtures_dir, tmp_path):
    """Hub repos often ship only ``*.fp16.safetensors``: loaded with variant="fp16"."""
    target = tmp_path / "sd_fp16"
    shutil.copytree(fixtures_dir / "sd", target)
    for file in target.glob("*/*.safetensors"):
        file.rename(file.with_name(file.name.replace(".safetensors", ".fp16.safetensors")))
    config = _config(fixtures_dir, methods=("sds",))
    config.prior = f"sd:{target}"
    prior = build_prior(config, [PROMPT], CPU)
    reference = build_prior(_config(fixtures_dir, methods=("sds",)), [PROMPT], CPU)
    for a, b in zip(prior.unet.parameters(), reference.unet.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["sds", "vsd", "ssd"])
def test_steps_on_latent_prior_are_finite(fixtures_dir, sd_prior, method):
    config = _config(fixtures_dir, "sds.guidance_scale=7.5", "vsd.guidance_scale=7.5")
    trainer = CellTrainer(config, method, PROMPT, 0, sd_prior, CPU)
    state = torch.random.get_rng_state()
    for step in range(3):
        out = trainer.step(step)
        assert out.grad.shape == (1, 4, 8, 8)
        assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
        for p in trainer.backbone.parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()
    assert torch.equal(state, torch.random.get_rng_state()), "a step touched the global RNG"


@pytest.mark.parametrize("mode", ["diffusers", "dreamfusion"])
def test_sds_gradient_equals_direct_unet_computation(fixtures_dir, mode):
    """G = w(t) (eps_hat - eps) with eps_hat from the UNet called by hand (tol 1e-5)."""
    scale = 7.5 if mode == "diffusers" else 100.0
    config = _config(
        fixtures_dir,
        "sd.view_dependent_prompting=false",
        f"sds.cfg_mode={mode}",
        f"sds.guidance_scale={scale}",
        methods=("sds",),
    )
    prior = build_prior(config, [PROMPT], CPU)
    sds = build_estimator("sds", config, prior, torch.Generator().manual_seed(0), CPU)
    g = torch.Generator().manual_seed(1)
    x = prior.encode(torch.rand(2, 3, 64, 64, generator=g))
    eps = torch.randn(x.shape, generator=g)
    t = torch.tensor([30, 700])
    ctx = EstimatorContext(prompt=PROMPT, cameras=_cameras((0.0, 90.0)))
    got, _ = sds.grad(x, t, eps, prior, ctx)

    with torch.no_grad():
        abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * eps
        cond = _text_embedding_by_hand(prior, PROMPT).expand(2, -1, -1)
        uncond = _text_embedding_by_hand(prior, "").expand(2, -1, -1)
        eps_c = prior.unet(x_t, t, encoder_hidden_states=cond).sample
        eps_u = prior.unet(x_t, t, encoder_hidden_states=uncond).sample
    if mode == "diffusers":
        eps_hat = eps_u + scale * (eps_c - eps_u)
    else:
        eps_hat = eps_c + scale * (eps_c - eps_u)
    w = (1 - abar).view(-1, 1, 1, 1)
    torch.testing.assert_close(got, w * (eps_hat - eps), rtol=1e-5, atol=1e-5)
    assert prior.n_evals == 4  # two images x two branches


def test_lora_update_changes_only_lora_and_camera_embedding(fixtures_dir, sd_prior):
    from estimators.eps_phi import LoRAEpsPhi

    config = _config(fixtures_dir)
    vsd = build_estimator("vsd", config, sd_prior, torch.Generator().manual_seed(0), CPU)
    assert isinstance(vsd.model, LoRAEpsPhi)
    assert vsd.optimizer.param_groups[0]["lr"] == config.vsd.lora_lr
    prior_before = {
        f"{name}.{k}": v.detach().clone()
        for name in ("unet", "vae", "text_encoder")
        for k, v in getattr(sd_prior, name).state_dict().items()
    }
    lora_before = {k: v.detach().clone() for k, v in vsd.model.unet.state_dict().items()}

    cameras = _cameras((10.0, 200.0))
    g = torch.Generator().manual_seed(2)
    x = sd_prior.encode(torch.rand(2, 3, 64, 64, generator=g)).detach()
    t = torch.tensor([100, 600])
    ctx = EstimatorContext(prompt=PROMPT, cameras=cameras, generator=g)
    with torch.no_grad():
        x_t = add_noise(x, t, torch.randn(x.shape, generator=g), sd_prior.alphas_cumprod)
        # at init eps_phi is exactly the pretrained prediction on the view-independent prompt
        # (threestudio's LoRA text condition)
        init = vsd.model.predict(x_t, t, ctx, sd_prior)
        plain = sd_prior.text_embedding(PROMPT).unsqueeze(0).expand(2, -1, -1)
        torch.testing.assert_close(init, sd_prior.run_unet(sd_prior.unet, x_t, t, plain))
    for step in range(2):
        ctx.step = step
        vsd.update(x, sd_prior, ctx)

    for key, value in sd_prior.unet.state_dict().items():
        assert torch.equal(value, prior_before[f"unet.{key}"]), key
    for name in ("vae", "text_encoder"):
        for key, value in getattr(sd_prior, name).state_dict().items():
            assert torch.equal(value, prior_before[f"{name}.{key}"]), key
    changed = {
        k for k, v in vsd.model.unet.state_dict().items() if not torch.equal(v, lora_before[k])
    }
    assert changed, "eps_phi did not train"
    assert all(".lora_" in k or k.startswith("class_embedding.") for k in changed), changed
    assert any(".lora_B." in k for k in changed)
    assert "class_embedding.linear_2.weight" in changed
    trainable = {n for n, p in vsd.model.unet.named_parameters() if p.requires_grad}
    assert all(".lora_" in k or k.startswith("class_embedding.") for k in trainable)
    with torch.no_grad():
        after = vsd.model.predict(x_t, t, ctx, sd_prior)
    assert not torch.allclose(after, init)


@pytest.mark.parametrize(
    ("method", "overrides"),
    [("vsd", ["vsd.guidance_scale=7.5"]), ("esd", []), ("esd", ["esd.guidance_scale=7.5"])],
    ids=["vsd-s7.5", "esd-s1", "esd-s7.5"],
)
def test_lora_cost_model_matches_the_counters_of_a_step(fixtures_dir, sd_prior, method, overrides):
    """With the LoRA eps_phi, one training step's prior and eps_phi evaluations per image ==
    the registry's cost model (ESD's guided grad makes its conditional prior call itself)."""
    from benchmark.run.factories import method_config
    from estimators.registry import METHODS

    config = _config(fixtures_dir, *overrides, methods=(method,))
    trainer = CellTrainer(config, method, PROMPT, 0, sd_prior, CPU)
    prior_before, phi_before = sd_prior.n_evals, trainer.estimator.network_evaluations()["phi"]
    trainer.step(0)
    batch = config.camera.batch_size
    measured = (
        (sd_prior.n_evals - prior_before) / batch,
        (trainer.estimator.network_evaluations()["phi"] - phi_before) / batch,
    )
    want = METHODS[method].nfe_per_step(method_config(config, method), sd_prior)
    assert measured == (want["prior"], want["phi"])


def test_lora_state_dict_round_trip(fixtures_dir, sd_prior):
    config = _config(fixtures_dir)
    a = build_estimator("vsd", config, sd_prior, torch.Generator().manual_seed(0), CPU)
    b = build_estimator("vsd", config, sd_prior, torch.Generator().manual_seed(1), CPU)
    x = sd_prior.encode(torch.rand(1, 3, 64, 64)).detach()
    ctx = EstimatorContext(prompt=PROMPT, cameras=_cameras(), generator=torch.Generator())
    a.update(x, sd_prior, ctx)
    b.load_state_dict(a.state_dict())
    for (name, p), q in zip(a.model.named_trainable().items(), b.model.parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("view_dependent", [False, True])
def test_text_embeddings_are_computed_once_per_prompt(fixtures_dir, view_dependent):
    config = _config(
        fixtures_dir,
        "sds.guidance_scale=7.5",
        f"sd.view_dependent_prompting={str(view_dependent).lower()}",
        methods=("sds",),
    )
    prior = build_prior(config, [PROMPT], CPU)
    calls = []
    prior.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    trainer = CellTrainer(config, "sds", PROMPT, 0, prior, CPU)
    for step in range(6):
        trainer.step(step)
    prompts = {
        PROMPT + s for s in (", front view", ", side view", ", back view", ", overhead view")
    }
    assert set(prior._embeddings) <= (prompts if view_dependent else {PROMPT}) | {""}
    if not view_dependent:
        assert len(calls) == 2  # the prompt and the empty prompt, once each over 6 steps
    assert len(calls) == len(prior._embeddings) == prior.n_text_encodes
    assert prior.n_evals == 12  # 6 steps x (cond + uncond)


def test_view_suffix_follows_threestudio():
    from priors.stable_diffusion import SDPriorConfig, view_suffix

    config = SDPriorConfig()
    assert view_suffix(20.0, 0.0, config) == ", front view"
    assert view_suffix(20.0, 90.0, config) == ", side view"
    assert view_suffix(20.0, -170.0, config) == ", back view"
    assert view_suffix(20.0, 190.0, config) == ", back view"
    assert view_suffix(70.0, 0.0, config) == ", overhead view"
    assert view_suffix(20.0, 0.0, SDPriorConfig(view_dependent_prompting=False)) == ""


def test_v_prediction_converts_to_eps(fixtures_dir):
    """eps = sigma_t x_t + alpha_t v for a v_prediction model (tol 1e-5)."""
    config = _config(
        fixtures_dir, "sd.view_dependent_prompting=false", prior="sd_v", methods=("sds", "vsd")
    )
    prior = build_prior(config, [PROMPT], CPU)
    assert prior.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([5, 900])
    ctx = EstimatorContext(prompt=PROMPT, cameras=_cameras((0.0, 0.0)))
    with torch.no_grad():
        got = prior.predict_branch(x_t, t, ctx, conditional=True)
        hidden = _text_embedding_by_hand(prior, PROMPT).expand(2, -1, -1)
        v = prior.unet(x_t, t, encoder_hidden_states=hidden).sample
    alpha, sigma = alpha_sigma(prior.alphas_cumprod, t)
    expected = sigma.view(-1, 1, 1, 1) * x_t + alpha.view(-1, 1, 1, 1) * v
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, v)
    w = timestep_weight(t, prior.alphas_cumprod, "sds")
    assert torch.isfinite(w).all()
    trainer = CellTrainer(config, "vsd", PROMPT, 0, prior, CPU)
    for step in range(2):
        assert torch.isfinite(trainer.step(step).grad).all()


def test_dpt_depth_is_differentiable_through_decode(fixtures_dir, sd_prior):
    geometry = sd_prior.geometry_estimator(_config(fixtures_dir).sd.depth_model)
    x_t = torch.randn(2, 4, 8, 8, requires_grad=True)
    ctx = EstimatorContext(
        prompt=PROMPT, cameras=_cameras((0.0, 90.0)), render={"depth": torch.rand(2, 1, 16, 16)}
    )
    depth = geometry.depth(x_t, torch.tensor([10, 10]), ctx)
    assert depth.shape == (2, 1, 16, 16) and torch.isfinite(depth).all()
    (grad,) = torch.autograd.grad(depth.square().sum(), x_t)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    normal = geometry.normal(x_t, torch.tensor([10, 10]), ctx)
    assert normal.shape == (2, 3, 16, 16)
    torch.testing.assert_close(normal.norm(dim=1), torch.ones(2, 16, 16))


def test_normals_from_a_plane_facing_the_camera():
    from priors.dpt import normals_from_depth

    c2w = _cameras((0.0,), elevation=0.0).c2w
    flat = normals_from_depth(torch.ones(1, 1, 8, 8), c2w)
    toward_camera = c2w[0, :3, 2]  # the camera's +z axis (OpenGL: points back at the viewer)
    torch.testing.assert_close(flat[0, :, 4, 4], toward_camera, rtol=1e-5, atol=1e-5)


# --- user errors: one line, exit 2, no traceback ---------------------------------------


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return cli_errors.run_cli(*args, timeout=timeout)


def _incomplete(root: Path, tmp: Path) -> Path:
    target = tmp / "sd_incomplete"
    shutil.copytree(root / "sd", target)
    (target / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    return target


def _no_depth(root: Path, tmp: Path) -> Path:
    target = tmp / "sd_no_depth"
    shutil.copytree(root / "sd", target)
    shutil.rmtree(target / "depth")
    return target


ERROR_CASES = [
    pytest.param(
        lambda r, d: ["--prior", "sd:/nonexistent"], ["not found", "/nonexistent"], id="missing"
    ),
    pytest.param(lambda r, d: ["--prior", "sd:"], ["'prior'", "sd:PATH"], id="malformed"),
    pytest.param(lambda r, d: ["--prior", "stable"], ["'prior'", "'stable'"], id="unknown"),
    pytest.param(
        lambda r, d: ["--prior", f"sd:{_incomplete(r, d)}"],
        ["incomplete", "vae/diffusion_pytorch_model.safetensors"],
        id="incomplete",
    ),
    pytest.param(
        lambda r, d: ["--prior", f"sd:{r / 'dpt'}"], ["'dpt'", "not a diffusers"], id="dpt-dir"
    ),
    pytest.param(
        lambda r, d: ["--prior", f"sd:{r / 'sd'}", "--set", f"sd.depth_model={r / 'sd'}"],
        ["diffusers pipeline", "not a DPT"],
        id="depth-model-wrong-type",
    ),
    pytest.param(
        lambda r, d: ["--prior", f"sd:{_no_depth(r, d)}"],
        ["depth model", "sd.depth_model"],
        id="no-depth-model",
    ),
    pytest.param(
        lambda r, d: [
            "--prior",
            f"sd:{r / 'sd'}",
            "--prompts",
            str(_write(d / "long.txt", " ".join(["a very long prompt"] * 30) + "\n")),
        ],
        ["tokens", "77"],
        id="prompt-too-long",
    ),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("make_args", "expected"), ERROR_CASES)
def test_real_model_errors_are_one_line(fixtures_dir, tmp_path, make_args, expected):
    """In-process (the CLI's ``main(argv)``; tests/test_cli_errors.py runs the subprocess
    smoke tests): one ``error:`` line, exit 2, no traceback, nothing under ``--out``."""
    out = tmp_path / "out"
    args = make_args(fixtures_dir, tmp_path)
    proc = cli_errors.call_main(
        "run", "--steps", "2", "--methods", "sds,ssd", "--out", str(out), *args
    )
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert proc.returncode == 2, both
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists() or not any(out.iterdir())


def test_make_fixtures_cli(tmp_path):
    proc = run_cli("make-fixtures", str(tmp_path / "fx"), "--only", "dpt")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fx" / "dpt" / "model.safetensors").is_file()
    bad = run_cli("make-fixtures", str(tmp_path / "fx"), "--only", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown fixture 'nope'")


@pytest.mark.slow
def test_end_to_end_two_prompts_three_methods(fixtures_dir, tmp_path):
    prompts = _write(tmp_path / "prompts.txt", "a red sphere\na DSLR photo of a hamburger\n")
    out = tmp_path / "runs"
    proc = run_cli(
        "run",
        "--prior",
        f"sd:{fixtures_dir / 'sd'}",
        "--methods",
        "sds,vsd,ssd",
        "--prompts",
        str(prompts),
        "--steps",
        "3",
        "--set",
        "measure.every=0",
        "--out",
        str(out),
        "--quiet",
        "--no-report",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    (run,) = [p for p in out.iterdir() if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert [c["status"] for c in manifest["cells"]] == ["ok"] * 6
    assert all(c["steps_done"] == 3 for c in manifest["cells"])


@pytest.mark.parametrize("field", ["scalar", "vector"])
def test_learned_baseline_on_latents_steps_and_resumes_bit_identically(
    fixtures_dir, sd_prior, tmp_path, field
):
    """SSD's learned baseline conditioned on SD latents: finite steps, the network moves, and
    it (with its Adam state) survives a weights_only checkpoint round trip bit for bit."""
    from benchmark.run.checkpoint import CellCheckpoint, load_checkpoint, save_checkpoint

    sets = ("ssd.baseline=learned", "ssd.mu=fixed", f"ssd.learned_field={field}")
    config = _config(fixtures_dir, *sets, methods=("ssd",))
    a = CellTrainer(config, "ssd", PROMPT, 0, sd_prior, CPU)
    assert a.estimator.learned.channels == 4  # latents
    for step in range(2):
        assert torch.isfinite(a.step(step).grad).all()
    assert a.estimator.network_evaluations()["phi"] == 4  # grad + fit, 2 steps, batch 1
    assert float(a.estimator.learned.net.conv_out.weight.abs().sum()) > 0
    path = tmp_path / "cell.pt"
    save_checkpoint(path, CellCheckpoint(2, a.state_dict(), 0, 0.0, {}, {}))
    b = CellTrainer(config, "ssd", PROMPT, 0, sd_prior, CPU)
    b.load_state_dict(load_checkpoint(path).trainer_state)
    assert torch.equal(a.step(2).grad, b.step(2).grad)


@pytest.mark.slow
def test_end_to_end_learned_baseline_on_latents(fixtures_dir, tmp_path):
    """``run --methods ssd --set ssd.baseline=learned`` (vector field) on the tiny SD fixture,
    variance probe on (it calls the learned baseline's grad on K latents)."""
    prompts = _write(tmp_path / "prompts.txt", "a red sphere\n")
    out = tmp_path / "runs"
    proc = run_cli(
        "run", "--prior", f"sd:{fixtures_dir / 'sd'}", "--methods", "sds,ssd",
        "--prompts", str(prompts), "--steps", "2", "--set", "ssd.baseline=learned",
        "--set", "ssd.learned_field=vector", "--set", "measure.every=2",
        "--set", "measure.samples=2", "--set", "measure.bootstrap=0",
        "--set", "measure.reference_samples=0", "--out", str(out), "--quiet", "--no-report",
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    (run,) = [p for p in out.iterdir() if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert [c["status"] for c in manifest["cells"]] == ["ok"] * 2
    assert manifest["cost_model"]["ssd"]["per_step"]["phi"] == 2


def test_lora_vsd_checkpoint_resumes_bit_identically(fixtures_dir, sd_prior, tmp_path):
    """LoRA + camera embedding + AdamW state survive a weights_only checkpoint round trip."""
    from benchmark.run.checkpoint import CellCheckpoint, load_checkpoint, save_checkpoint

    config = _config(fixtures_dir, "vsd.guidance_scale=7.5")
    a = CellTrainer(config, "vsd", PROMPT, 0, sd_prior, CPU)
    for step in range(2):
        a.step(step)
    path = tmp_path / "cell.pt"
    save_checkpoint(path, CellCheckpoint(2, a.state_dict(), 0, 0.0, {}, {}))
    b = CellTrainer(config, "vsd", PROMPT, 0, sd_prior, CPU)
    b.load_state_dict(load_checkpoint(path).trainer_state)
    assert torch.equal(a.step(2).grad, b.step(2).grad)


def test_clip_fixture_loads_through_the_user_checkpoint_path(tmp_path):
    """make-fixtures' tiny open_clip loads via eval.clip=ARCH_JSON:WEIGHTS and scores."""
    from evaluation.clip import load_clip_scorer
    from priors.fixtures import make_fixtures

    (clip_dir,) = make_fixtures(tmp_path, ["clip"])
    scorer = load_clip_scorer(f"{clip_dir / 'tiny_clip.json'}:{clip_dir / 'model.safetensors'}")
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scores = scorer.score(images, ["a red sphere", "a chair"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
