"""The argparse definition of ``python -m benchmark``: one small function per subcommand.
Errors are one line (``_Parser.error`` raises UserError; the CLI prints ``error: ...``)."""

from __future__ import annotations

import argparse

from core.errors import UserError


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(item) for item in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must be integers like 0,1,2; got {text!r}"
        ) from None
    bad = [s for s in seeds if not 0 <= s < 2**63]
    if bad:
        raise argparse.ArgumentTypeError(f"seeds must lie in [0, 2**63), got {bad[0]}")
    return seeds


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str):
        raise UserError(message)


def _add_run_parser(commands) -> None:
    """``run``."""
    run = commands.add_parser(
        "run",
        help="train every method x prompt x seed and record metrics",
        description="Train every method x prompt x seed on the same random streams, log "
        "metrics to runs/<run_id>/ and print a summary. Exit code 0: all cells finished; "
        "1: some cells diverged (recorded); 2: bad input.",
    )
    run.add_argument(
        "--methods",
        type=_csv,
        default=None,
        help="comma list of estimators (default sds,vsd,ssd): sds, vsd, ssd, csd, nfsd, ism, "
        "sdi, asd, cds, esd, bridge",
    )
    run.add_argument("--prompts", default=None, help="prompts file (default prompts/objects.txt)")
    run.add_argument(
        "--backbone",
        default=None,
        help="voxel (3D, default), hashgrid (3D hash-grid NeRF), gaussians (3D Gaussian "
        "splatting) or image (the 2D world)",
    )
    run.add_argument("--prior", default=None, help="diffusion prior (default world)")
    run.add_argument("--steps", type=int, default=None, help="optimisation steps per cell")
    run.add_argument("--seeds", type=_seeds, default=None, help="comma list of seeds, e.g. 0,1,2")
    run.add_argument("--out", default=None, help="results root (default runs/)")
    run.add_argument("--config", default=None, help="YAML config file (see configs/)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set sds.guidance_scale=7.5 (repeatable)",
    )
    run.add_argument("--device", default=None, help="cpu or cuda")
    run.add_argument(
        "--clip",
        default=None,
        metavar="SPEC",
        help="CLIP scorer (= --set eval.clip=SPEC): auto (default), world, none, or "
        "ARCH:PATH for a local open_clip checkpoint, e.g. ViT-B-32:/models/clip.safetensors",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    run.add_argument(
        "--no-report", action="store_true", help="do not write report.html into the run dir"
    )
    run.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the interrupted run in RUN_DIR with its own config (= resume RUN_DIR)",
    )


def _add_resume_parser(commands) -> None:
    """``resume``."""
    resume = commands.add_parser(
        "resume",
        help="continue an interrupted run (bit-identical to an uninterrupted one on CPU)",
        description="Continue an interrupted or killed run from its checkpoints: finished "
        "cells are skipped, the interrupted cell continues from its last checkpoint "
        "(config key checkpoint_every, default every 50 steps, and on Ctrl-C), with the "
        "run's own config.yaml.",
    )
    resume.add_argument("run_dir", metavar="RUN_DIR", help="runs/<run_id> folder")
    resume.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    resume.add_argument("--no-report", action="store_true", help="skip report.html")


def _add_prompts_parser(commands) -> None:
    """``prompts``."""
    prompts = commands.add_parser(
        "prompts",
        help="list the prompts the ground-truth world knows (and write a thumbnail grid)",
        description="Print the world's prompts, one a line, and write a PNG grid of every "
        "object seen from 4 azimuths (0 = front, 90, 180, 270; elevation 20).",
    )
    prompts.add_argument(
        "--grid", default="prompts_grid.png", help="PNG path (default prompts_grid.png)"
    )
    prompts.add_argument("--no-grid", action="store_true", help="only list the prompts")
    prompts.add_argument("--size", type=int, default=64, help="thumbnail side in pixels")


def _add_report_parser(commands) -> None:
    """``report``."""
    report = commands.add_parser(
        "report",
        help="one self-contained HTML report of one or more runs",
        description="Turn run dirs into one self-contained HTML file (figures embedded, no "
        "network): manifest and config differences, summary tables with bootstrap CIs, paired "
        "differences vs SDS, gradient-variance and convergence figures, render grids. "
        "Exit code 0: written; 2: bad input.",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs/<run_id> folders")
    report.add_argument("--out", default="report.html", help="output file (default report.html)")
    report.add_argument("--title", default="steinbench report", help="page title")
    report.add_argument(
        "--psnr-threshold",
        type=float,
        default=None,
        help="PSNR (dB) for steps/calls/seconds to threshold (default: per prompt, 75%% of "
        "the best method's gain)",
    )


def _add_regress_parser(commands) -> None:
    """``regress``."""
    regress = commands.add_parser(
        "regress",
        help="check variance numbers of a small fixed-seed run against a golden file",
        description="Run the golden file's small fixed-seed configuration and compare log "
        "variance, NSR and final PSNR within the file's tolerances. Exit code 0: within "
        "tolerance; 1: regression; 2: bad input. --update --reason '...' rewrites the file.",
    )
    regress.add_argument(
        "--golden", default="tests/golden/variance.json", help="golden file (JSON)"
    )
    regress.add_argument("--update", action="store_true", help="rerun and rewrite the golden file")
    regress.add_argument("--reason", default=None, help="why the golden numbers change")


def _add_sweep_parser(commands) -> None:
    """``sweep``."""
    sweep = commands.add_parser(
        "sweep",
        help="run a sweep spec (methods x prompts x seeds x config grid) locally or on Ray",
        description="Expand SPEC.yaml into cells (methods x prompts x seeds x grid points), "
        "validate every cell's config, then run each cell as one task into OUT/cells/<cell_id>/ "
        "and combine the results into OUT/metrics.parquet. Rerunning into the same OUT skips "
        "finished cells and continues interrupted ones from their checkpoint. Exit code 0: "
        "every cell finished (NaN divergences are recorded results); 1: some cells failed "
        "after their retries; 2: bad input.",
        epilog="Example: python -m benchmark sweep configs/sweep_example.yaml --workers 2",
    )
    sweep.add_argument("spec", metavar="SPEC.yaml", help="sweep spec (see docs/manual.md, Sweeps)")
    sweep.add_argument(
        "--executor", choices=("local", "ray"), default="local", help="local (default) or ray"
    )
    sweep.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    sweep.add_argument(
        "--workers",
        type=int,
        default=None,
        help="cells run at once (local default 1; ray default: as resources allow)",
    )
    sweep.add_argument(
        "--retries", type=int, default=None, help="retries of a crashed cell (default: spec's)"
    )
    sweep.add_argument("--out", default=None, help="sweep dir (default sweeps/<name>)")
    sweep.add_argument(
        "--max-cells",
        type=int,
        default=None,
        help="allow more cells than the default cap of 10000",
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress lines")
    sweep.add_argument(
        "--report", action="store_true", help="also write OUT/report.html over finished cells"
    )


def _add_make_fixtures_parser(commands) -> None:
    """``make-fixtures``."""
    fixtures = commands.add_parser(
        "make-fixtures",
        help="write tiny random models of the real architectures (for tests, offline)",
        description="Build tiny random-weight models of the real architectures and save them "
        "in the real on-disk formats (safetensors): DIR/sd (diffusers Stable Diffusion, with "
        "a DPT depth model in DIR/sd/depth) and DIR/dpt. Use with --prior sd:DIR/sd.",
    )
    fixtures.add_argument("directory", metavar="DIR", help="output folder")
    fixtures.add_argument("--only", type=_csv, default=None, help="comma list of fixture names")
    fixtures.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    fixtures.add_argument(
        "--force", action="store_true", help="replace non-empty DIR/<name> folders"
    )
    fixtures.add_argument(
        "--full-size",
        action="store_true",
        help="DIR/sd at real size instead: SD 2.1-base + DPT-hybrid (depth/) + TAESD (taesd/), "
        "random seeded weights, fp16 safetensors (2.6 GB, ~1 min)",
    )


def _add_methods_parser(commands) -> None:
    """``methods``."""
    commands.add_parser(
        "methods",
        help="list the registered estimators, backbones and priors",
        description="The registries (estimators/registry.py METHODS, backbones/registry.py "
        "BACKBONES, benchmark/run/factories.py PRIORS): names, titles and each method's network "
        "evaluations per step and image at its default config.",
    )


def _add_doctor_parser(commands) -> None:
    """``doctor``."""
    doctor = commands.add_parser(
        "doctor",
        help="versions, CUDA, optional CUDA paths; with --device cuda a timed battery",
        description="Report what this machine can run (benchmark/cli/doctor.py). On a machine "
        "without CUDA it says so and exits 0.",
    )
    doctor.add_argument("--device", default=None, help="cuda: also run the timed battery")
    doctor.add_argument("--out", default=None, help="also write the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m benchmark",
        description="steinbench: benchmark score-distillation gradient estimators "
        "(SDS, VSD, SSD) under identical random streams and 3D backbones.",
        epilog="Example: python -m benchmark run --methods sds --prompts prompts/objects.txt",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    _add_run_parser(commands)
    _add_resume_parser(commands)
    _add_prompts_parser(commands)
    _add_report_parser(commands)
    _add_regress_parser(commands)
    _add_sweep_parser(commands)
    _add_make_fixtures_parser(commands)
    _add_methods_parser(commands)
    _add_doctor_parser(commands)
    return parser
