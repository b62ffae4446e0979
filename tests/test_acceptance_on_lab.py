"""The acceptance scenarios can fail: run them on a lab broken on purpose, then heal it.

Each test runs `pytest features/...` as a user would (a subprocess against the shared lab),
breaks one real component through the lab's supervisor, and restores it in a finally.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import control, health
from lab.layout import SERVERS, LabLayout
from tests.conftest import lab_healthy, lab_target_text, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def run_features(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_scenarios_pass_on_a_healthy_lab(running_lab: LabLayout) -> None:
    result = run_features("features/acceptance/")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "11 passed" in result.stdout


def test_rotation_fails_and_names_the_stopped_server(running_lab: LabLayout) -> None:
    server1 = SERVERS[0]
    control.stop_programs(running_lab, [server1.backend_program])
    try:
        wait_until(
            "HAProxy marks server1 DOWN",
            lambda: health.haproxy_servers(running_lab)[("servers", "server1")].startswith("DOWN"),
        )
        result = run_features("features/acceptance/entrypoint.feature")
        assert result.returncode == 1, result.stdout[-3000:]
        assert "2 failed, 1 passed" in result.stdout
        assert "server1: 0 of 20 requests answered 200 from it" in result.stdout
        assert "load balancer reports server1 DOWN" in result.stdout or "200s seen: server2=20" in (
            result.stdout
        )
    finally:
        control.start_programs(running_lab, [server1.backend_program])
        wait_until("lab healthy again", lambda: lab_healthy(running_lab))


def test_standby_check_fails_when_replication_is_broken(running_lab: LabLayout) -> None:
    primary = health.pg_primary(running_lab)
    assert primary is not None
    standby = next(s for s in SERVERS if s != primary)
    control.stop_programs(running_lab, [standby.postgres_program])
    try:
        wait_until(
            "the primary loses its standby",
            lambda: not health.pg_nodes(running_lab) or _no_streaming_standby(running_lab),
        )
        result = run_features("features/acceptance/database.feature", "-k", "standby")
        assert result.returncode == 1, result.stdout[-3000:]
        assert "no standby is streaming from the primary" in result.stdout
    finally:
        control.start_programs(running_lab, [standby.postgres_program])
        wait_until("lab healthy again", lambda: lab_healthy(running_lab), timeout=90)


def test_a_primary_whose_standby_is_not_synchronous_is_not_healthy(
    running_lab: LabLayout,
) -> None:
    """The monitor still calls the pair primary + secondary; the primary itself says its
    standby is not synchronous. The lab's health, and so every lab fault's preflight and a
    heal's wait, ask the nodes too."""
    import psycopg
    from psycopg import sql

    primary = health.pg_primary(running_lab)
    assert primary is not None
    url = running_lab.db_node_url(primary, "postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW synchronous_standby_names").fetchone()
        assert row is not None and row[0]
        names = str(row[0])
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
        conn.execute("SELECT pg_reload_conf()")

    def flagged() -> bool:
        rows = {c.name: c for c in health.components(running_lab)}
        row = rows[primary.postgres_program]
        return not row.healthy and row.detail == "no standby streaming synchronously from it"

    try:
        wait_until("the lab's health flags the asynchronous standby", flagged)
        assert [n.reported_state for n in health.pg_nodes(running_lab)].count("primary") == 1
        assert not control._pg_settled(running_lab)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            # ALTER SYSTEM takes no bound parameters: the value goes in as a quoted literal.
            set_names = sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}")
            conn.execute(set_names.format(sql.Literal(names)))
            conn.execute("SELECT pg_reload_conf()")
        wait_until("lab healthy again", lambda: lab_healthy(running_lab), timeout=90)


def _no_streaming_standby(layout: LabLayout) -> bool:
    import psycopg

    primary = health.pg_primary(layout) or SERVERS[0]
    with psycopg.connect(layout.db_node_url(primary), autocommit=True) as conn:
        rows = conn.execute("SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'")
        return rows.fetchone() is None


def test_target_without_cache_skips_cache_scenarios_with_reason(
    running_lab: LabLayout, tmp_path: Path
) -> None:
    lab_yaml = lab_target_text()
    head, _, rest = lab_yaml.partition("\ncache:\n")
    _, _, tail = rest.partition("\nservers:\n")
    no_cache = tmp_path / "lab-without-cache.yaml"
    no_cache.write_text(head + "\nservers:\n" + tail)
    result = run_features("features/acceptance/cache.feature", "--target", str(no_cache))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "4 skipped" in result.stdout
    assert "target 'lab' has no cache role" in result.stdout


def test_unreachable_entrypoint_refuses_in_one_line(tmp_path: Path) -> None:
    layout = LabLayout.from_env()
    lab_yaml = lab_target_text()
    # A generic target at a loopback port nothing listens on (the lab block's last port).
    down = tmp_path / "down.yaml"
    down.write_text(
        lab_yaml.replace("provider: lab", "provider: generic").replace(
            f"url: {layout.entrypoint_url}\n", f"url: http://127.0.0.1:{layout.base_port + 49}\n"
        )
    )
    result = run_features("features/acceptance/", "--target", str(down))
    assert result.returncode == 2
    unused = f"http://127.0.0.1:{layout.base_port + 49}/health"
    assert f"down.yaml: entrypoint.url: {unused} does not answer" in result.stdout
    assert "passed" not in result.stdout and "failed" not in result.stdout
