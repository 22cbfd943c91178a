"""Command line interface. Heavy imports (torch, diffusers) happen inside commands only, so
``python -m benchmark --help`` stays fast."""

from __future__ import annotations

import argparse
import sys

from benchmark.errors import UserError

EXIT_OK, EXIT_CELLS_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(item) for item in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"seeds must be integers like 0,1,2; got {text!r}"
        ) from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str):
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m benchmark",
        description="steinbench: benchmark score-distillation gradient estimators "
        "(SDS, VSD, SSD) under identical random streams and 3D backbones.",
        epilog="Example: python -m benchmark run --methods sds --prompts prompts/objects.txt",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="train every method x prompt x seed and record metrics",
        description="Train every method x prompt x seed on the same random streams, log "
        "metrics to runs/<run_id>/ and print a summary. Exit code 0: all cells finished; "
        "1: some cells diverged (recorded); 2: bad input.",
    )
    run.add_argument("--methods", type=_csv, default=None, help="comma list: sds[,vsd,ssd]")
    run.add_argument("--prompts", default=None, help="prompts file (default prompts/objects.txt)")
    run.add_argument("--backbone", default=None, help="3D representation (default voxel)")
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
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary table")

    commands.add_parser("prompts", help="list the prompts the ground-truth world knows")
    return parser


def cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmark.config import load_config
    from benchmark.methods import validate_methods
    from benchmark.prompts import read_prompts, validate_prompts

    config = load_config(
        args.config,
        args.overrides,
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
    from world.objects import known_prompts

    validate_prompts(prompts, known_prompts())
    from benchmark.runner import run_benchmark

    _, results = run_benchmark(config, methods, prompts, argv=argv, quiet=args.quiet)
    return EXIT_CELLS_FAILED if any(r.status != "ok" for r in results) else EXIT_OK


def cmd_prompts(args: argparse.Namespace, argv: list[str]) -> int:
    from world.objects import known_prompts

    for prompt in known_prompts():
        print(prompt)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "prompts": cmd_prompts}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args, ["python", "-m", "benchmark", *argv])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
