"""`python -m benchmark regress`: the golden variance numbers pass on the current code and
fail when an estimator formula is perturbed (run in-process so that monkeypatch applies)."""

import dataclasses
import json
import math
from pathlib import Path

import pytest

from benchmark.checks.regress import (
    GoldenError,
    compare,
    default_config,
    load_golden,
    registered_methods,
    write_golden,
)
from benchmark.cli.commands import main

GOLDEN = Path(__file__).resolve().parent / "golden" / "variance.json"


def _subset(tmp_path: Path, methods: list[str]) -> Path:
    """The golden file restricted to ``methods`` (cells are independent: same numbers)."""
    data = json.loads(GOLDEN.read_text())
    data["config"]["methods"] = methods
    data["values"] = {k: v for k, v in data["values"].items() if k.split("/", 1)[0] in methods}
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(data))
    return path


def test_golden_file_is_complete():
    golden = load_golden(GOLDEN)
    assert golden["reason"] and golden["updated"] and golden["versions"]["torch"]
    assert set(golden["config"]["methods"]) <= set(registered_methods())
    assert {"log_var", "img_log_var", "nsr", "psnr"} <= set(golden["tolerances"])
    stats = {key.rsplit("/", 1)[-1] for key in golden["values"]}
    assert stats == {"log_var", "img_log_var", "nsr", "psnr"}
    methods = {key.split("/", 1)[0] for key in golden["values"]}
    assert methods == set(golden["config"]["methods"])


def test_the_codes_configuration_is_the_golden_files():
    """``--update`` would record the configuration the golden numbers were made with (the
    shared tiny world of benchmark.checks.tiny_runs plus regress's own settings)."""
    golden, code = load_golden(GOLDEN)["config"], default_config()
    assert {k: golden[k] for k in ("prompts", "seeds", "steps", "overrides")} == {
        k: code[k] for k in ("prompts", "seeds", "steps", "overrides")
    }


def test_compare_tolerances_and_non_finite_values():
    tol = {"log_var": {"abs": 0.05, "rel": 0.0}, "nsr": {"abs": 0.0, "rel": 0.1}}
    golden = {"a/log_var": 1.0, "b/nsr": 2.0, "c/log_var": -math.inf, "d/nsr": math.nan}
    ok = {"a/log_var": 1.04, "b/nsr": 2.19, "c/log_var": -math.inf, "d/nsr": math.nan}
    assert all(r.status == "ok" for r in compare(golden, ok, tol))
    bad = {"a/log_var": 1.06, "b/nsr": 2.21, "c/log_var": 0.0, "e/nsr": 1.0}
    status = {r.key: r.status for r in compare(golden, bad, tol)}
    assert status == {
        "a/log_var": "REGRESSION",
        "b/nsr": "REGRESSION",
        "c/log_var": "REGRESSION",
        "d/nsr": "missing",
        "e/nsr": "new",
    }


def test_golden_round_trip_and_bad_files(tmp_path, monkeypatch):
    path = write_golden(
        tmp_path / "g.json",
        {"methods": ["sds"], "prompts": ["a snowman"], "seeds": [0], "steps": 1, "overrides": []},
        {"sds/x/log_var": -math.inf, "sds/x/nsr": 0.5},
        "test",
    )
    golden = load_golden(path)
    assert golden["values"]["sds/x/log_var"] == -math.inf and golden["reason"] == "test"
    json.loads(path.read_text())  # strict JSON (non-finite numbers are stored as strings)
    write_golden(path, golden["config"], golden["values"], "second")
    again = load_golden(path)
    assert again["reason"] == "second" and [h["reason"] for h in again["history"]] == ["test"]

    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(GoldenError):
        load_golden(tmp_path / "broken.json")
    assert main(["regress", "--golden", str(tmp_path / "broken.json")]) == 2
    assert main(["regress", "--golden", str(tmp_path / "missing.json")]) == 2
    assert main(["regress", "--golden", str(path), "--reason", "no update"]) == 2
    assert main(["regress", "--golden", str(path), "--update"]) == 2  # needs --reason


@pytest.mark.slow
def test_regress_passes_on_current_code(capsys):
    assert main(["regress", "--golden", str(GOLDEN)]) == 0
    out = capsys.readouterr().out
    assert "0 outside tolerance" in out


def _flip_noise_phi(original):
    """S = eps - sigma grad phi instead of eps phi - sigma grad phi (phi dropped from the
    noise term: the control variate is no longer zero-mean)."""

    def perturbed(phi_fn, x_t, eps, sigma_t, return_phi=False):
        s, phi = original(phi_fn, x_t, eps, sigma_t, return_phi=True)
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        s = s - eps * phi.view(shape) + eps
        return (s, phi) if return_phi else s

    return perturbed


def test_regress_fails_when_the_stein_control_variate_is_perturbed(tmp_path, monkeypatch, capsys):
    import estimators.ssd

    golden = _subset(tmp_path, ["ssd"])
    monkeypatch.setattr(
        estimators.ssd,
        "stein_control_variate",
        _flip_noise_phi(estimators.ssd.stein_control_variate),
    )
    assert main(["regress", "--golden", str(golden)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "outside tolerance" in out


def test_regress_fails_when_the_sds_residual_is_perturbed(tmp_path, monkeypatch, capsys):
    """G = w (eps_hat + eps) instead of w (eps_hat - eps)."""
    import estimators.sds

    golden = _subset(tmp_path, ["sds"])
    original = estimators.sds.SDS.grad

    def grad(self, x, t, eps, prior, ctx):
        out = original(self, x, t, eps, prior, ctx)
        _, _, w = estimators.sds.guided_residual_terms(x, t, eps, prior, ctx, self.guidance)
        return dataclasses.replace(out, grad=out.grad + 2 * w * eps)

    monkeypatch.setattr(estimators.sds.SDS, "grad", grad)
    assert main(["regress", "--golden", str(golden)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
