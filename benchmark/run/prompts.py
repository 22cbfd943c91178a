"""Prompt files: one prompt a line, '#' comments, blank lines, CRLF and UTF-8 (BOM) accepted."""

from __future__ import annotations

import sys
from pathlib import Path

from core.errors import UserError


def read_prompts(path: str | Path, warn=None) -> list[str]:
    """Prompts in file order with duplicates dropped (each duplicate reported once)."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    path = Path(path)
    if not path.exists():
        raise UserError(f"prompts file not found: {path}")
    if not path.is_file():
        raise UserError(f"prompts path is not a file: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"prompts file {path} is not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise UserError(f"cannot read prompts file {path}: {exc.strerror}") from None
    prompts: list[str] = []
    duplicates: list[str] = []
    for line in text.splitlines():
        prompt = line.split("#", 1)[0].strip()
        if not prompt:
            continue
        if prompt in prompts:
            if prompt not in duplicates:
                duplicates.append(prompt)
            continue
        prompts.append(prompt)
    for prompt in duplicates:
        warn(f"duplicate prompt '{prompt}' in {path} is used once")
    if not prompts:
        raise UserError(f"prompts file {path} has no prompts (only blank lines or comments)")
    return prompts


def validate_prompts(prompts: list[str], known: list[str]) -> None:
    unknown = [p for p in prompts if p not in known]
    if unknown:
        raise UserError(
            f"unknown prompt '{unknown[0]}'; the world knows: " + ", ".join(f"'{k}'" for k in known)
        )
