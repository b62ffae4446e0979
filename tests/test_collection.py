"""The pytest wiring: .feature files collected directly, markers, target refusal and skips.

Each test writes a feature and a step module into a temporary folder (pytest-bdd's own way of
testing itself) and runs pytest there with the gameday plugin. The entrypoint is a tiny real
HTTP server on loopback, so no lab is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STEPS = """
from pytest_bdd import given, then
from gameday.target import Target

@given("the target is loaded", target_fixture="loaded")
def loaded(target: Target) -> Target:
    return target

@then("its name is known")
def name_known(loaded: Target) -> None:
    assert loaded.name

@then("it has a cache")
def has_cache(cache) -> None:
    assert cache.url
"""

FEATURE = """\
@acceptance
Feature: wiring
  Scenario: name
    Given the target is loaded
    Then its name is known

  Scenario: needs a cache
    Given the target is loaded
    Then it has a cache
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    # The project's own markers and options; locust's plugin stays out (it patches gevent).
    pytester.makeini((ROOT / "pytest.ini").read_text())
    pytester.makeconftest('pytest_plugins = ["gameday.pytest_plugin", "wiring_steps"]\n')
    pytester.makepyfile(wiring_steps=STEPS)
    pytester.mkdir("features")
    (pytester.path / "features" / "wiring.feature").write_text(FEATURE)
    return pytester


def target_file(pytester: pytest.Pytester, url: str, extra: str = "") -> Path:
    path = pytester.path / "t.yaml"
    path.write_text(f"name: tiny\nprovider: generic\nentrypoint:\n  url: {url}\n{extra}")
    return path


def test_feature_files_are_collected_directly(project: pytest.Pytester) -> None:
    result = project.runpytest("features/", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "features/wiring.feature::test_name",
            "features/wiring.feature::test_needs_a_cache",
        ]
    )
    assert result.ret == 0


def test_a_single_feature_file_can_be_run(project: pytest.Pytester, entrypoint: str) -> None:
    t = target_file(project, entrypoint)
    result = project.runpytest("features/wiring.feature", "--target", str(t), "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    # A role the target does not have skips the scenario, with that reason.
    result.stdout.fnmatch_lines(["*target 'tiny' has no cache role*"])


def test_tags_become_markers_for_selection(project: pytest.Pytester, entrypoint: str) -> None:
    t = target_file(project, entrypoint)
    assert project.runpytest("features/", "--target", str(t), "-m", "acceptance").ret in (0,)
    result = project.runpytest("features/", "--target", str(t), "-m", "resilience")
    assert result.ret == 5  # nothing selected: the acceptance tag really is a marker


def test_unregistered_tag_is_an_error(project: pytest.Pytester) -> None:
    (project.path / "features" / "wiring.feature").write_text(
        FEATURE.replace("@acceptance", "@acceptanse")
    )
    result = project.runpytest("features/", "--collect-only")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*acceptanse*not found in `markers`*"])


def test_broken_target_exits_2_before_any_scenario(project: pytest.Pytester) -> None:
    bad = project.path / "bad.yaml"
    bad.write_text("name: b\nprovider: generic\nentrypoint:\n  url: ftp://x\n")
    result = project.runpytest("features/", "--target", str(bad))
    assert result.ret == 2
    result.stdout.fnmatch_lines(["*bad.yaml: entrypoint.url: 'ftp://x' is not a URL*"])
    result.assert_outcomes()  # nothing ran


def test_unreachable_entrypoint_exits_2_naming_it(project: pytest.Pytester) -> None:
    # Port 9 (discard) on loopback: nothing listens there.
    t = target_file(project, "http://127.0.0.1:9")
    result = project.runpytest("features/", "--target", str(t))
    assert result.ret == 2
    result.stdout.fnmatch_lines(
        ["*t.yaml: entrypoint.url: http://127.0.0.1:9/health does not answer*"]
    )
    result.assert_outcomes()


def test_harness_tests_never_load_a_target(pytester: pytest.Pytester) -> None:
    # A session without scenarios must not read --target (nor start a lab).
    pytester.makeini((ROOT / "pytest.ini").read_text())
    pytester.makeconftest('pytest_plugins = ["gameday.pytest_plugin"]\n')
    pytester.makepyfile(test_plain="def test_x():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest("--target", "does-not-exist", "test_plain.py")
    result.assert_outcomes(passed=1)
