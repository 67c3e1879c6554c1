"""The issue-22 scenario table names only tests that exist, and every class of the issue has scenarios."""

from benchmarks.hardening_scenarios import CLASSES, SCENARIOS, missing_tests


def test_every_listed_test_exists():
    assert missing_tests() == []


def test_every_class_is_listed_and_uncovered_scenarios_say_why():
    assert {kind for kind, _, _ in SCENARIOS} == set(CLASSES)
    for _, scenario, tests in SCENARIOS:
        assert tests, scenario  # a non-empty list of tests, or the reason there is none
