"""Prompt files: comments, blank lines, CRLF, BOM, UTF-8, duplicates, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.run.prompts import read_prompts, validate_prompts
from core.errors import UserError

KNOWN = ["a red sphere", "a blue cube", "a green torus"]


def write(tmp_path: Path, data: bytes | str, name: str = "prompts.txt") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def no_warnings(msg: str) -> None:
    raise AssertionError(f"unexpected warning: {msg}")


def test_blank_lines_comments_and_whitespace(tmp_path):
    path = write(
        tmp_path,
        "# header comment\n"
        "\n"
        "   a red sphere   \n"
        "\t\n"
        "  # indented comment\n"
        "a blue cube # trailing comment\n"
        "\ta green torus\t#another\n"
        "\n\n",
    )
    assert read_prompts(path, warn=no_warnings) == KNOWN


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path, b"a red sphere\r\n# comment\r\n\r\na blue cube  \r\na green torus")
    assert read_prompts(path, warn=no_warnings) == KNOWN


def test_utf8_bom(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfa red sphere\r\na blue cube\r\n")
    prompts = read_prompts(path, warn=no_warnings)
    assert prompts == ["a red sphere", "a blue cube"]
    assert not prompts[0].startswith("\ufeff")


def test_bom_before_comment(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf# comment\na red sphere\n")
    assert read_prompts(path, warn=no_warnings) == ["a red sphere"]


def test_non_ascii_utf8(tmp_path):
    path = write(tmp_path, "a café\nun cœur rouge # commentaire\n日本の城\n")
    assert read_prompts(path, warn=no_warnings) == ["a café", "un cœur rouge", "日本の城"]


def test_accepts_str_path(tmp_path):
    path = write(tmp_path, "a red sphere\n")
    assert read_prompts(str(path), warn=no_warnings) == ["a red sphere"]


def test_duplicates_kept_once_in_first_seen_order_and_reported_once(tmp_path):
    path = write(
        tmp_path,
        "a blue cube\n"
        "a red sphere\n"
        "a blue cube\n"
        "  a red sphere  # again, with whitespace\n"
        "a green torus\n"
        "a blue cube\n",
    )
    warnings: list[str] = []
    prompts = read_prompts(path, warn=warnings.append)
    assert prompts == ["a blue cube", "a red sphere", "a green torus"]
    assert len(warnings) == 2, warnings
    assert sum("'a blue cube'" in w for w in warnings) == 1
    assert sum("'a red sphere'" in w for w in warnings) == 1
    assert not any("a green torus" in w for w in warnings)
    assert all("duplicate" in w and str(path) in w for w in warnings)


def test_default_warning_goes_to_stderr(tmp_path, capsys):
    path = write(tmp_path, "a red sphere\na red sphere\n")
    assert read_prompts(path) == ["a red sphere"]
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:"), captured.err
    assert "'a red sphere'" in lines[0]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"", "no prompts", id="empty"),
        pytest.param(b"# just\n\n  # comments\r\n   \n", "no prompts", id="only-comments"),
        pytest.param(b"\xff\xfe\xfa", "UTF-8", id="not-utf8"),
    ],
)
def test_unusable_file_is_user_error(tmp_path, data, expected):
    path = write(tmp_path, data)
    with pytest.raises(UserError, match=expected) as info:
        read_prompts(path, warn=no_warnings)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_directory_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_prompts(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="not a file"):
        read_prompts(tmp_path)


def test_unreadable_file_is_user_error(tmp_path, monkeypatch):
    path = write(tmp_path, "a red sphere\n")

    def deny(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(UserError, match="Permission denied"):
        read_prompts(path)


def test_validate_prompts_accepts_known():
    validate_prompts(["a blue cube", "a red sphere"], KNOWN)


def test_validate_prompts_lists_known_prompts():
    with pytest.raises(UserError) as info:
        validate_prompts(["a red sphere", "a purple elephant"], KNOWN)
    message = str(info.value)
    assert "'a purple elephant'" in message
    for prompt in KNOWN:
        assert f"'{prompt}'" in message
    assert "\n" not in message


def test_shipped_prompts_files_are_valid():
    """The default list (single objects and distributions) and the single-object list."""
    from world.distributions import DISTRIBUTIONS, all_prompts
    from world.objects import known_prompts

    folder = Path(__file__).resolve().parents[1] / "prompts"
    default = read_prompts(folder / "objects.txt")
    validate_prompts(default, all_prompts())
    assert [p for p in default if p in DISTRIBUTIONS] == list(DISTRIBUTIONS)
    assert read_prompts(folder / "single_objects.txt") == known_prompts()
