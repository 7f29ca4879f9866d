"""The test tree itself: every test module can be collected in one pytest run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parents[1]


def test_test_module_basenames_are_unique_across_the_tree():
    """pytest imports test modules by basename (no packages): two files with one name make the
    whole run fail at collection, which a run of one directory does not show."""
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
