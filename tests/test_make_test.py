"""`make test`'s scheduling: the files handed out first exist, and the order is the one kept."""

from pathlib import Path

from tests.conftest import LONGEST_FIRST

ROOT = Path(__file__).resolve().parents[1]


def test_longest_first_names_existing_files_once():
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    for name in LONGEST_FIRST:
        assert (ROOT / name).is_file(), name


def test_make_test_keeps_the_collection_order():
    """xdist's default reorders files by their number of tests (most first); the Makefile turns
    that off so the longest files, put first by tests/conftest.py, start first."""
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("PYTEST_PAR :="))
    assert "--dist loadfile" in line and "--no-loadscope-reorder" in line


def test_the_longest_files_are_collected_first(request):
    """In this session's collection, a listed file comes before every unlisted one."""
    paths = list(dict.fromkeys(item.nodeid.split("::")[0] for item in request.session.items))
    listed = [p for p in paths if p in LONGEST_FIRST]
    if listed and len(listed) < len(paths):
        last_listed = max(paths.index(p) for p in listed)
        first_other = min(i for i, p in enumerate(paths) if p not in LONGEST_FIRST)
        assert last_listed < first_other, paths
    assert listed == sorted(listed, key=LONGEST_FIRST.index)
