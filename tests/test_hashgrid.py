"""Hash-grid NeRF (backbones/hash_encoding.py, backbones/hashgrid.py): tinycudann's hash and
layout, trilinear interpolation, gradients (gradcheck, fast vs naive backward), compositing,
overfitting one world view, state-dict round trips, the CUDA / tinycudann dispatch, config.

All on CPU with fixed seeds; tolerances are stated per test.
"""

from __future__ import annotations

import math
from pathlib import Path

import nerfacc
import pytest
import torch

from backbones import hash_encoding as he
from backbones.hash_encoding import (
    HashEncoding,
    hash_encode,
    level_layout,
    spatial_hash,
    use_tcnn,
)
from backbones.hashgrid import HashGridConfig, HashGridNeRF, render_path
from backbones.volume import composite
from core.cameras import orbit_cameras

TINY = dict(n_levels=3, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0)
SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=10, hidden_dim=16, n_samples=24)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def encode(enc: HashEncoding, x: torch.Tensor, table: torch.Tensor, naive: bool = False):
    """The torch encoding of x with an explicit table (dtype of x)."""
    levels = (enc.scales.to(x.dtype), enc.resolution, enc.size, enc.offset, enc.n_dense)
    return hash_encode(x, table, *levels, naive=naive)


# ------------------------------------------------------------------- hash and layout


def test_spatial_hash_matches_tinycudann_on_known_inputs():
    """tinycudann's coherent prime hash: x * 1 ^ y * 2654435761 ^ z * 805459861 (mod 2^32).
    Expected values worked out with Python's exact integers (and literal for simple ones)."""
    mask = (1 << 32) - 1
    coords = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1), (3, 5, 7), (4095, 4095, 4095)]
    literal = [0, 1, 2654435761, 805459861, 2922720805, 1191511397, 739598811]
    for (x, y, z), value in zip(coords, literal, strict=True):
        assert (x ^ ((y * 2654435761) & mask) ^ ((z * 805459861) & mask)) == value
    got = spatial_hash(torch.tensor(coords, dtype=torch.int32))
    assert got.dtype == torch.int32
    assert [v & mask for v in got.tolist()] == literal  # int32 bit pattern == uint32 value
    # modulo a power-of-two table: remainder of the int32 pattern == uint32 modulo
    size = 1 << 19
    assert torch.remainder(got, size).tolist() == [v % size for v in literal]


def test_level_layout_follows_tinycudann_rules():
    """scale_l = base 2^(l log2 s) - 1, res = ceil(scale) + 1, size = min(ceil8(res^3), 2^T),
    dense iff res^3 fits; per_level_scale 2 and base 4 give scales 3, 7, 15 exactly."""
    scales, res, sizes, dense = level_layout(**TINY)
    assert scales == [3.0, 7.0, 15.0]
    assert res == [4, 8, 16]
    assert sizes == [64, 256, 256]
    assert dense == [True, False, False]  # 8^3 = 512 > 2^8 entries: hashed
    scales, res, sizes, dense = level_layout(16, 19, 16, 1.447269237440378)  # threestudio
    assert res[0] == 16 and sizes[0] == 4096 and dense[:3] == [True, True, True]
    assert all(s == 1 << 19 for s, d in zip(sizes, dense, strict=True) if not d)


def test_encoding_equals_a_plain_python_reference():
    """Every level, corner, hash and weight recomputed with Python scalars (float64): equal
    to 1e-12."""
    enc = HashEncoding(**TINY, implementation="torch", generator=gen())
    x = torch.rand(20, 3, generator=gen(1), dtype=torch.float64)
    table = torch.randn(enc.n_entries, 2, generator=gen(2), dtype=torch.float64)
    scales, res, sizes, dense = level_layout(**TINY)
    offsets = [0, sizes[0], sizes[0] + sizes[1]]
    expected = torch.zeros(20, 6, dtype=torch.float64)
    for i in range(20):
        for level in range(3):
            pos = [float(x[i, d]) * scales[level] + 0.5 for d in range(3)]
            for corner in range(8):
                bits = [(corner >> d) & 1 for d in range(3)]
                v = [math.floor(pos[d]) + bits[d] for d in range(3)]
                if dense[level]:
                    index = v[0] + res[level] * v[1] + res[level] ** 2 * v[2]
                else:
                    index = v[0] ^ (v[1] * 2654435761) ^ (v[2] * 805459861)
                index = (index & 0xFFFFFFFF) % sizes[level]
                w = math.prod(
                    (pos[d] - math.floor(pos[d])) if bits[d] else 1 - (pos[d] - math.floor(pos[d]))
                    for d in range(3)
                )
                expected[i, 2 * level : 2 * level + 2] += w * table[offsets[level] + index]
    torch.testing.assert_close(encode(enc, x, table), expected, atol=1e-12, rtol=0)


def test_trilinear_interpolation_is_exact_at_grid_vertices():
    """At x = (v - 1/2) / scale_l (pos integer, f = 0) level l returns table[index(v)] exactly."""
    enc = HashEncoding(**TINY, implementation="torch", generator=gen())
    table = torch.randn(enc.n_entries, 2, generator=gen(3), dtype=torch.float64)
    scales, res, sizes, dense = level_layout(**TINY)
    for level, (scale, offset) in enumerate(zip(scales, [0, 64, 320], strict=True)):
        v = torch.randint(1, int(scale), (30, 3), generator=gen(level), dtype=torch.int32)
        x = (v.double() - 0.5) / scale
        if dense[level]:
            index = v[:, 0] + res[level] * (v[:, 1] + res[level] * v[:, 2])
        else:
            index = torch.remainder(spatial_hash(v), sizes[level])
        got = encode(enc, x, table)[:, 2 * level : 2 * level + 2]
        assert torch.equal(got, table[offset + index.long()])


# ---------------------------------------------------------------------------- gradients


def test_gradcheck_table_and_points_float64():
    """torch.autograd.gradcheck (float64 finite differences, eps 1e-6, atol 1e-5) of the
    encoding w.r.t. the table and the points (points away from cell faces)."""
    enc = HashEncoding(**TINY, implementation="torch", generator=gen())
    table = torch.randn(enc.n_entries, 2, generator=gen(4), dtype=torch.float64)
    x = 0.05 + 0.9 * torch.rand(6, 3, generator=gen(5), dtype=torch.float64)
    x.requires_grad_(True)
    table.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, p: encode(enc, p, t), (table, x), atol=1e-5)


def test_fast_backward_equals_naive_embedding_backward():
    """The embedding_bag forward + index_add backward against F.embedding + autograd, float32,
    50k points, 8 levels: outputs and table gradients equal to 1e-5 (relative to max)."""
    enc = HashEncoding(8, 2, 14, 16, 1.447269237440378, "torch", generator=gen())
    x = torch.rand(50_000, 3, generator=gen(6))
    upstream = torch.randn(50_000, 16, generator=gen(7))
    outs, grads = [], []
    for naive in (False, True):
        table = enc.table().detach().clone().normal_(generator=gen(8)).requires_grad_(True)
        out = encode(enc, x, table, naive=naive)
        (out * upstream).sum().backward()
        outs.append(out.detach())
        grads.append(table.grad)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    scale = float(grads[1].abs().max())
    torch.testing.assert_close(grads[0] / scale, grads[1] / scale, atol=1e-5, rtol=0)


def test_double_backward_through_analytic_normals_reaches_the_table():
    model = HashGridNeRF(HashGridConfig(**TINY, normals="analytic"), generator=gen())
    out = model.render(orbit_cameras(1, (20.0,), 2.5, 40.0), 6, 6, normals=True)
    out["normal"].sum().backward()
    assert model.encoding.params.grad is not None
    assert float(model.encoding.params.grad.abs().sum()) > 0


# ----------------------------------------------------------------------- compositing


def test_dense_nerfacc_compositing_equals_cumprod_reference():
    """w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = prod_{j<i} exp(-sigma_j delta_j): nerfacc's
    dense compositing equals this plain cumprod to 1e-5."""
    g = gen(9)
    t = torch.sort(torch.rand(7, 12, generator=g) * 3, dim=1).values
    t_starts, t_ends = t[:, :-1], t[:, 1:]
    sigmas = torch.rand(7, 11, generator=g) * 5
    colors = torch.rand(7, 11, 3, generator=g)
    background = torch.tensor([0.2, 0.5, 0.9])
    out = composite(t_starts, t_ends, sigmas, colors, background)
    alpha = 1 - torch.exp(-sigmas * (t_ends - t_starts))
    trans = torch.cumprod(torch.cat([torch.ones(7, 1), 1 - alpha[:, :-1]], 1), 1)
    w = trans * alpha
    opacity = w.sum(1, keepdim=True)
    torch.testing.assert_close(out["opacity"], opacity, atol=1e-5, rtol=0)
    expected_rgb = (w[..., None] * colors).sum(1) + (1 - opacity) * background
    torch.testing.assert_close(out["rgb"], expected_rgb, atol=1e-5, rtol=0)
    depth = (w * 0.5 * (t_starts + t_ends)).sum(1, keepdim=True)
    torch.testing.assert_close(out["depth"], depth, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------- the backbone


def test_render_shapes_blob_init_and_outward_normals():
    """The blob_magic3d init: opaque centre, transparent corners showing the white background;
    normals (both kinds) face the camera at the image centre (cos > 0.95)."""
    cams = orbit_cameras(2, (30.0,), 2.5, 40.0)
    for normals in ("finite_difference", "analytic"):
        config = HashGridConfig(**TINY, normals=normals, shading="lambertian", n_samples=48)
        model = HashGridNeRF(config, generator=gen())
        with torch.no_grad():
            out = model.render(cams, 9, 9, normals=True)
        assert out["rgb"].shape == out["normal"].shape == out["shaded"].shape == (2, 3, 9, 9)
        assert out["depth"].shape == out["opacity"].shape == (2, 1, 9, 9)
        assert float(out["opacity"][:, 0, 4, 4].min()) > 0.95
        assert float(out["opacity"][:, 0, 0, 0].max()) < 0.01
        torch.testing.assert_close(out["rgb"][:, :, 0, 0], torch.ones(2, 3), atol=1e-2, rtol=0)
        n = out["normal"][:, :, 4, 4]
        torch.testing.assert_close(n.norm(dim=1), torch.ones(2), atol=1e-3, rtol=0)
        assert bool(((n * cams.view_direction).sum(1) > 0.95).all())


def test_learned_background_and_param_groups():
    model = HashGridNeRF(HashGridConfig(**TINY, background="learned"), generator=gen())
    names = [g["name"] for g in model.param_groups()]
    assert names == ["encoding", "network", "background"]
    out = model.render(orbit_cameras(1, (0.0,), 2.5, 120.0), 8, 8)  # corners miss the box
    out["rgb"].sum().backward()
    for group in model.param_groups():
        assert all(float(p.grad.abs().sum()) > 0 for p in group["params"]), group["name"]


def test_init_uses_only_the_given_generator():
    """Same generator seed -> identical parameters; the global RNG is neither used nor moved."""
    state = torch.random.get_rng_state()
    a = HashGridNeRF(SMALL, generator=gen(11))
    b = HashGridNeRF(SMALL, generator=gen(11))
    c = HashGridNeRF(SMALL, generator=gen(12))
    assert torch.equal(torch.random.get_rng_state(), state)
    params = zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True)
    for (name, pa), pb, pc in params:
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


@pytest.mark.parametrize("background", ["fixed", "learned"])
def test_state_dict_round_trip_renders_identically(background):
    """Train a few steps (moves the table, MLPs and background), mark occupancy cells, then
    load the state dict into a fresh instance with another seed: bit-identical renders."""
    config = HashGridConfig(**TINY, background=background, n_samples=16)
    model = HashGridNeRF(config, generator=gen(0))
    opt = torch.optim.Adam(model.param_groups())
    cams = orbit_cameras(2, (20.0,), 2.5, 40.0)
    for _ in range(3):
        opt.zero_grad()
        model.render(cams, 8, 8)["rgb"].square().sum().backward()
        opt.step()
    assert bool(model.occupancy.binaries.all())  # all cells start occupied
    model.occupancy.binaries[0, 1, 2, 3] = False  # state that must travel too
    model.occupancy.occs[5] = 0.25
    state = model.state_dict()
    assert {"encoding.params", "occupancy.binaries", "occupancy.occs"} <= set(state)
    fresh = HashGridNeRF(config, generator=gen(99))
    fresh.load_state_dict(state)
    assert not bool(fresh.occupancy.binaries[0, 1, 2, 3])
    assert float(fresh.occupancy.occs[5]) == 0.25
    with torch.no_grad():
        a, b = model.render(cams, 8, 8, normals=True), fresh.render(cams, 8, 8, normals=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_overfits_one_world_view():
    """Adam on the MSE to one exact render of 'a red sphere' at 32x32 (4 levels, 2^10 table,
    24 samples): held-in PSNR > 25 dB within 40 steps (measured: 27 dB at 30 steps)."""
    from world.metrics import psnr
    from world.objects import get_object
    from world.renderer import render_object

    cam = orbit_cameras(1, (20.0,), 2.5, 40.0, azimuth_offset=30.0)
    target = render_object(get_object("a red sphere"), cam, 32, 32)["rgb"]
    model = HashGridNeRF(SMALL, generator=gen(0))
    opt = torch.optim.Adam(model.param_groups(), betas=(0.9, 0.99), eps=1e-15)
    for _ in range(40):
        rgb = model.render(cam, 32, 32)["rgb"]
        loss = (rgb - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        value = float(psnr(model.render(cam, 32, 32)["rgb"], target)[0])
    assert value > 25.0, value


# ------------------------------------------------------------------------ dispatch


def test_render_path_follows_the_tensor_device():
    assert render_path(torch.device("cpu")) == "dense"
    assert render_path(torch.device("cuda", 0)) == "packed"
    assert render_path(torch.device("meta")) == "dense"


def test_tcnn_dispatch_rule(monkeypatch):
    """tinycudann only for CUDA tensors: never on CPU, never for 'torch'; 'auto' when it
    imports; 'tcnn' without it is an ImportError naming the alternatives."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for available in (True, False):
        monkeypatch.setattr(he, "tcnn_available", lambda a=available: a)
        for impl in ("auto", "torch", "tcnn"):
            assert use_tcnn(impl, cpu) is False
        assert use_tcnn("torch", cuda) is False
        assert use_tcnn("auto", cuda) is available
    monkeypatch.setattr(he, "tcnn_available", lambda: True)
    assert use_tcnn("tcnn", cuda) is True
    monkeypatch.setattr(he, "tcnn_available", lambda: False)
    with pytest.raises(ImportError, match="auto"):
        use_tcnn("tcnn", cuda)


def test_cpu_render_uses_the_dense_path_and_step_pre_render_is_a_no_op(monkeypatch):
    model = HashGridNeRF(HashGridConfig(**TINY), generator=gen())

    def fail(*args, **kwargs):
        raise AssertionError("packed path on CPU")

    monkeypatch.setattr(model, "_render_packed", fail)
    monkeypatch.setattr(model.occupancy, "update_every_n_steps", fail)
    assert model.step_pre_render(None, {}, 0) == {}
    model.render(orbit_cameras(1, (0.0,), 2.5, 40.0), 4, 4)
    assert not model.supports_vmap  # the variance probe uses the autograd engine


def test_tinycudann_is_not_imported_at_module_import():
    import sys

    assert "tinycudann" not in sys.modules or he.tcnn_available()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_packed_render_runs():
    device = torch.device("cuda")
    model = HashGridNeRF(HashGridConfig(**TINY), device=device, generator=gen())
    model.step_pre_render(None, model.initialize_state(), 0)
    cams = orbit_cameras(1, (20.0,), 2.5, 40.0).to(device)
    out = model.render(cams, 16, 16, normals=True)
    assert out["rgb"].shape == (1, 3, 16, 16) and out["rgb"].device.type == "cuda"
    assert float(out["opacity"][0, 0, 8, 8]) > 0.9
    assert nerfacc is not None


# -------------------------------------------------------------------------- config


def test_config_selects_hashgrid_and_threestudio_preset_loads():
    from benchmark.run.config import load_config
    from benchmark.run.factories import build_backbone

    preset = Path(__file__).resolve().parents[1] / "configs" / "hashgrid_threestudio.yaml"
    config = load_config(str(preset))
    assert config.backbone == "hashgrid"
    hg = config.hashgrid
    assert (hg.n_levels, hg.n_features_per_level, hg.log2_hashmap_size) == (16, 2, 19)
    assert hg.base_resolution == 16 and abs(hg.per_level_scale - 1.447269237440378) < 1e-12
    small = load_config(None, ["hashgrid.n_levels=2", "hashgrid.log2_hashmap_size=6"])
    small.backbone = "hashgrid"
    backbone = build_backbone(small, torch.device("cpu"), gen())
    assert isinstance(backbone, HashGridNeRF) and backbone.encoding.n_levels == 2


def test_config_validation_is_strict():
    from benchmark.run.config import load_config
    from core.errors import ConfigError

    for bad, key in [
        ("hashgrid.n_levels=0", "n_levels"),
        ("hashgrid.log2_hashmap_size=40", "log2_hashmap_size"),
        ("hashgrid.per_level_scale=0.5", "per_level_scale"),
        ("hashgrid.normals=sideways", "normals"),
        ("hashgrid.nope=1", "nope"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_config(None, [bad])


# --------------------------------------------------------------- harness integration


def _hashgrid_trainer(prior, method: str = "sds"):
    from benchmark.run.config import load_config
    from benchmark.run.trainer import CellTrainer

    overrides = [
        "backbone=hashgrid",
        "hashgrid.n_levels=3",
        "hashgrid.log2_hashmap_size=8",
        "hashgrid.base_resolution=4",
        "hashgrid.per_level_scale=2.0",
        "hashgrid.n_samples=16",
        "render.height=16",
        "render.width=16",
    ]
    config = load_config(None, overrides)
    return CellTrainer(config, method, "a snowman", 0, prior, torch.device("cpu"))


def test_trainer_init_is_seeded_by_the_cell_and_steps_are_reproducible(world_prior_small):
    """Two cells with the same seed: identical initial theta (init stream) and bit-identical
    theta after two SDS steps."""
    a, b = _hashgrid_trainer(world_prior_small), _hashgrid_trainer(world_prior_small)
    for trainer in (a, b):
        for k in range(2):
            trainer.step(k)
    for (name, pa), pb in zip(a.backbone.named_parameters(), b.backbone.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_variance_probe_works_with_the_hash_grid(world_prior_small):
    """The probe runs on the autograd engine (the hash grid opts out of vmapping) and its
    per-sample gradients equal separate backward passes (max relative error 1e-4)."""
    from benchmark.probe import (
        PerSampleGradients,
        draw_measure_inputs,
        measure_gradient_variance,
        theta_parameters,
    )
    from benchmark.probe.config import MeasureConfig

    trainer = _hashgrid_trainer(world_prior_small)
    trainer.step(0)
    config = MeasureConfig(samples=3, variants=("all", "fixed_camera"), bootstrap=20)
    metrics = measure_gradient_variance(trainer.probe_subject(), 1, config)
    for variant in config.variants:
        assert math.isfinite(metrics[f"var/{variant}/log_var"])
        assert metrics[f"var/{variant}/var_trace/encoding"] > 0
    draws = draw_measure_inputs(trainer.probe_subject(), 1, 3)
    sampler = PerSampleGradients(trainer.probe_subject(), 1, "auto")
    assert sampler.engine == "autograd"
    grads, rows = sampler(draws)
    theta = [p for _, _, p in theta_parameters(trainer.backbone)]
    for k in range(3):
        trainer.backbone.zero_grad(set_to_none=True)
        x = trainer.prior.encode(trainer.backbone.render(draws.cameras[k], 16, 16)["rgb"])
        (x * grads[k : k + 1]).sum().backward()
        expected = torch.cat([p.grad.reshape(-1) for p in theta])
        err = float((rows[k] - expected).abs().max() / expected.abs().max())
        assert err < 1e-4, err
