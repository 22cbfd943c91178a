"""Command line interface. Heavy imports (torch, diffusers) happen inside commands only, so
``python -m benchmark --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys

from benchmark.cli.parser import build_parser
from benchmark.run.inputs import check_fixture_targets, check_out_dir, unique_seeds
from core.errors import UserError, printable_line

EXIT_OK, EXIT_CELLS_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def cmd_make_fixtures(args: argparse.Namespace, argv: list[str]) -> int:
    from priors.fixtures import FIXTURES, make_fixtures

    unknown = [name for name in args.only or [] if name not in FIXTURES]
    if unknown:
        raise UserError(f"unknown fixture '{unknown[0]}'; known: {', '.join(FIXTURES)}")
    if args.full_size and args.only:
        raise UserError("--full-size builds DIR/sd only; drop --only")
    names = ["sd"] if args.full_size else args.only or list(FIXTURES)
    check_fixture_targets(args.directory, names, args.force)
    try:
        if args.full_size:
            from priors.fixtures_full import make_full_size

            written = make_full_size(args.directory, args.seed)
        else:
            written = make_fixtures(args.directory, args.only, args.seed)
    except Exception as exc:  # noqa: BLE001 - a full disk is OSError, SafetensorError, ...
        reason = write_failure(exc)
        if reason is None:
            raise
        raise UserError(f"cannot write fixtures to {args.directory}: {reason}") from None
    for path in written:
        print(path)
    return EXIT_OK


def write_failure(exc: BaseException) -> str | None:
    """The one-line reason when ``exc`` is a failed write (OSError; safetensors' or torch's
    error for a full disk or an I/O error); None for anything else (a bug: a traceback).

    >>> write_failure(OSError(28, "No space left on device"))
    'No space left on device'
    >>> write_failure(RuntimeError("Error while serializing: I/O error (os error 28)"))
    'Error while serializing: I/O error (os error 28)'
    >>> write_failure(ValueError("bad")) is None
    True
    """
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = " ".join(str(exc).split())
    markers = ("I/O error", "os error", "failed writing", "No space left")
    return text[:300] if any(m in text for m in markers) else None


RUN_OPTIONS = (
    "methods", "prompts", "backbone", "prior", "steps", "seeds", "out", "config", "clip",
)  # fmt: skip


def cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.resume is not None:
        given = [f"--{o}" for o in RUN_OPTIONS if getattr(args, o) is not None]
        given += ["--set"] if args.overrides else []
        given += ["--device"] if args.device is not None else []
        if given:
            raise UserError(
                f"--resume continues with the run's own config; drop {', '.join(given)}"
            )
        return _resume(args.resume, argv, args.quiet, not args.no_report)
    from benchmark.run.config import load_config
    from benchmark.run.factories import validate_methods
    from benchmark.run.prompts import read_prompts, validate_prompts

    overrides = list(args.overrides) + ([f"eval.clip={args.clip}"] if args.clip else [])
    config = load_config(
        args.config,
        overrides,
        methods=args.methods,
        prompts_file=args.prompts,
        backbone=args.backbone,
        prior=args.prior,
        steps=args.steps,
        seeds=args.seeds,
        out=args.out,
        device=args.device,
    )
    methods = validate_methods(config.methods)
    prompts = read_prompts(config.prompts_file)
    from world.distributions import all_prompts

    if config.prior == "world":  # a real prior takes any prompt (GT metrics: world prompts)
        validate_prompts(prompts, all_prompts())
    config.seeds = unique_seeds(config.seeds)
    check_out_dir(config.out)
    from benchmark.run.runner import run_benchmark

    _, results = run_benchmark(
        config, methods, prompts, argv=argv, quiet=args.quiet, report=not args.no_report
    )
    return EXIT_CELLS_FAILED if any(r.status != "ok" for r in results) else EXIT_OK


def cmd_resume(args: argparse.Namespace, argv: list[str]) -> int:
    return _resume(args.run_dir, argv, args.quiet, not args.no_report)


def _resume(run_dir: str, argv: list[str], quiet: bool, report: bool) -> int:
    from benchmark.run.resume import RunAlreadyFinished, open_run

    try:
        config, methods, prompts, state = open_run(run_dir)
    except RunAlreadyFinished:
        print(f"{run_dir} already finished; nothing to resume", file=sys.stderr)
        return EXIT_OK
    from benchmark.run.runner import run_benchmark

    _, results = run_benchmark(
        config, methods, prompts, argv=argv, quiet=quiet, report=report, resume=state
    )
    return EXIT_CELLS_FAILED if any(r.status != "ok" for r in results) else EXIT_OK


def cmd_prompts(args: argparse.Namespace, argv: list[str]) -> int:
    from world.distributions import all_prompts

    for prompt in all_prompts():
        print(prompt)
    if not args.no_grid:
        if not 8 <= args.size <= 512:
            raise UserError(f"--size must lie in [8, 512], got {args.size}")
        sys.stdout.flush()
        from world.thumbnails import write_prompt_grid

        path = write_prompt_grid(args.grid, args.size)
        print(f"thumbnail grid: {path}", file=sys.stderr)
    return EXIT_OK


def cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    from analysis.load import DamagedRun
    from analysis.runs import check_run_dir
    from benchmark.run.inputs import check_report_out

    for path in args.run_dirs:
        try:
            check_run_dir(path)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    out = check_report_out(args.run_dirs, args.out)
    summary = out.with_name("summary.csv")
    if summary.is_dir():
        raise UserError(f"cannot write {summary}: it is a folder")
    from analysis.report import write_report
    from analysis.verdict import write_summary_csv

    try:
        written = write_report(
            args.run_dirs, out, title=args.title, psnr_threshold=args.psnr_threshold
        )
        print(f"report: {written}")
        print(f"summary: {write_summary_csv(args.run_dirs, summary)}")
    except DamagedRun as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        where = exc.filename or out
        raise UserError(f"cannot write {where}: {exc.strerror or exc}") from None
    return EXIT_OK


def cmd_regress(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmark.checks.regress import GoldenError, check, update

    if args.reason is not None and not args.update:
        raise UserError("--reason is only used with --update")
    try:
        if args.update:
            update(args.golden, args.reason or "")
            return EXIT_OK
        code, _ = check(args.golden)
    except GoldenError as exc:
        raise UserError(str(exc)) from None
    return code


def cmd_methods(args: argparse.Namespace, argv: list[str]) -> int:
    from backbones.registry import BACKBONES
    from benchmark.run.factories import PRIORS
    from estimators.registry import METHODS

    print("methods (--methods; config section = name):")
    for name, spec in METHODS.items():
        cost = spec.nfe_per_step(spec.config_class(), None)
        nfe = ", ".join(f"{k} {v}" for k, v in cost.items() if v)
        print(f"  {name:8s} {spec.title:28s} NFE/step/image at defaults (world): {nfe}")
    print("backbones (--backbone; config section = name):")
    for name, spec in BACKBONES.items():
        print(f"  {name:8s} {spec.description}")
    print("priors (--prior):")
    for name, spec in PRIORS.items():
        print(f"  {name:8s} {spec.description}")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, argv: list[str]) -> int:
    if args.device not in (None, "cpu", "cuda"):
        raise UserError(f"bad value for --device: {args.device!r}; expected 'cpu' or 'cuda'")
    from benchmark.cli.doctor import doctor, print_report

    report = doctor(args.device)
    print_report(report)
    if args.out:
        from results.atomic import atomic_write_text

        try:
            atomic_write_text(args.out, json.dumps(report, indent=2, default=str) + "\n")
        except OSError as exc:
            raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmark.sweep import main_sweep

    return main_sweep(args, argv)


COMMANDS = {
    "run": cmd_run,
    "resume": cmd_resume,
    "sweep": cmd_sweep,
    "prompts": cmd_prompts,
    "report": cmd_report,
    "regress": cmd_regress,
    "make-fixtures": cmd_make_fixtures,
    "methods": cmd_methods,
    "doctor": cmd_doctor,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args, ["python", "-m", "benchmark", *argv])
    except UserError as exc:  # control characters escaped, long messages cut: one line
        print(f"error: {printable_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        run_dir = getattr(exc, "run_dir", None)
        hint = f"; continue with: python -m benchmark resume {run_dir}" if run_dir else ""
        print(printable_line(f"interrupted{hint}"), file=sys.stderr)
        return EXIT_INTERRUPTED
