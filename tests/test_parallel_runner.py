"""scripts/test-parallel, the runner of `make test`: its split, and what it does with shards that
fail, collect nothing or are interrupted. The runs use tiny test files of their own under
tmp_path (never the real suite) and the real pytest of the venv."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test-parallel"


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("test_parallel_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


tp = _load()


# -- the split -------------------------------------------------------------------------------


def test_the_split_is_balanced_and_the_same_whatever_the_order_given() -> None:
    rng = random.Random(7)
    durations = {f"tests/test_{i:02}.py": float(rng.randint(1, 300)) for i in range(40)}
    units = sorted(durations)
    parts = tp.split(units, durations, 3, together=())
    assert sorted(u for p in parts for u in p) == units  # each unit once
    loads = [sum(durations[u] for u in p) for p in parts]
    # Longest first onto the least loaded: no shard ends more than one unit after another.
    assert max(loads) - min(loads) <= max(durations.values())
    assert max(loads) < 1.05 * sum(loads) / 3, loads
    assert tp.split(units, durations, 3, together=()) == parts
    shuffled = units[:]
    rng.shuffle(shuffled)
    again = tp.split(shuffled, durations, 3, together=())
    assert [set(p) for p in again] == [set(p) for p in parts]


def test_a_group_that_must_share_a_shard_stays_together() -> None:
    durations = {"a.py": 100.0, "b.py": 100.0, "c.py": 100.0, "d.py": 100.0}
    parts = tp.split(sorted(durations), durations, 2, together=[("a.py", "b.py")])
    assert {"a.py", "b.py"} in [set(p) for p in parts]


def test_a_file_without_a_duration_counts_as_the_median_of_the_known() -> None:
    durations = {"a.py": 10.0, "b.py": 30.0, "c.py": 1000.0}
    assert tp.estimate("new.py", durations, list(durations.values())) == 30.0
    assert tp.estimate("new.py", {}, []) == tp.UNKNOWN_SEC
    # the long one alone; the unknown one (30 s) joins the short ones
    parts = tp.split(["a.py", "b.py", "c.py", "new.py"], durations, 2, together=())
    assert parts == [["c.py"], ["a.py", "b.py", "new.py"]]


def test_the_lab_units_go_to_as_few_shards_as_their_time_fills() -> None:
    durations = {f"t{i}.py": 100.0 for i in range(9)}
    lab = ["t0.py", "t4.py", "t8.py"]  # a third of the time: one shard's worth
    parts = tp.split(sorted(durations), durations, 3, together=(), lab=lab)
    assert parts[0] == lab and all(not set(lab) & set(p) for p in parts[1:])
    # twice as much lab time: two shards' worth, the third has none
    lab = ["t0.py", "t1.py", "t2.py", "t3.py", "t4.py", "t5.py"]
    parts = tp.split(sorted(durations), durations, 3, together=(), lab=lab)
    assert set(parts[0] + parts[1]) == set(lab) and not set(lab) & set(parts[2])
    # none: as before
    assert tp.split(sorted(durations), durations, 3, together=()) == tp.split(
        sorted(durations), durations, 3, together=(), lab=[]
    )


def test_the_suite_is_found_and_the_blocks_never_overlap() -> None:
    units = tp.discover(ROOT)
    assert "tests/test_parallel_runner.py" in units and "features/resilience" in units
    assert tp.uses_lab(ROOT, "features/acceptance")
    assert tp.uses_lab(ROOT, "tests/test_resilience_on_lab.py")
    # its own lab on base+50, not the shared one
    assert not tp.uses_lab(ROOT, "tests/test_lab.py")
    assert all(u.endswith(".py") or u.startswith("features/") for u in units)
    spans = sorted((b + tp.BLOCK[0], b + tp.BLOCK[1]) for b in tp.BASE_PORTS)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert all(hi < 17600 or lo > 17699 for lo, hi in spans)  # podman's fixed ports
    assert all(hi < 18000 for _, hi in spans)  # the helpers' blocks


# -- runs of tiny suites ---------------------------------------------------------------------


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    # as the real pytest.ini: locust's plugin (gevent) has no business in these sessions
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:locust -p no:anyio\n")
    for name, text in files.items():
        (root / "tests" / name).write_text(textwrap.dedent(text))
    return root


def run(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *runner_args(root), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# Blocks no lab uses: these runs start none, and the runner's check for labs left behind (and
# its sweep) must never look at the blocks of the real suite's shards, which run meanwhile.
FAKE_BLOCKS = (1400, 1600)


def runner_args(root: Path) -> list[str]:
    return ["--durations", str(root / "durations.json"), "--log-dir", str(root / "logs"),
            "--pytest", str(Path(sys.executable).parent / "pytest"),
            "--base-ports", ",".join(map(str, FAKE_BLOCKS))]  # fmt: skip


PASSING = "def test_ok():\n    assert 1 + 1 == 2\n"


def test_a_failing_test_makes_the_run_fail_and_is_shown(tmp_path: Path) -> None:
    root = project(tmp_path, {
        "test_good.py": PASSING,
        "test_bad.py": "def test_sum():\n    assert 1 + 1 == 3, 'arithmetic is off'\n",
    })  # fmt: skip
    out = run(root, "--shards", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "arithmetic is off" in out.stdout  # the failing shard's failure, at the end
    assert "FAILED: tests failed" in out.stdout
    assert "1 passed, 1 failed, 0 skipped, 0 errors" in out.stdout
    assert "1 passed, 0 failed" in out.stdout  # the other shard's line: it passed


def test_every_shard_passing_passes(tmp_path: Path) -> None:
    root = project(tmp_path, {"test_a.py": PASSING, "test_b.py": PASSING, "test_c.py": PASSING})
    out = run(root, "--shards", "2", "--record-durations")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed, 0 failed, 0 skipped, 0 errors" in out.stdout
    recorded = tp.load_durations(root / "durations.json")
    assert sorted(recorded) == ["tests/test_a.py", "tests/test_b.py", "tests/test_c.py"]
    assert (root / "logs" / "shard-1.log").exists() and (root / "logs" / "shard-2.xml").exists()


def test_a_shard_that_collects_nothing_fails_the_run(tmp_path: Path) -> None:
    root = project(tmp_path, {"test_good.py": PASSING, "test_empty.py": "X = 1\n"})
    out = run(root, "--shards", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "pytest collected no tests (exit 5)" in out.stdout


SLEEPER = """
    import os, pathlib, time

    def test_waits():
        here = pathlib.Path(__file__).parent.parent
        (here / "started-{name}").write_text(str(os.getpid()))
        try:
            time.sleep(600)
        except KeyboardInterrupt:
            # what a session's teardown does on Ctrl-C: heal, stop its lab
            (here / "stopped-{name}").write_text(os.environ["GAMEDAY_LAB_BASE_PORT"])
            raise
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_reaches_every_shard_and_none_is_left(tmp_path: Path, signum: int) -> None:
    root = project(tmp_path, {
        "test_one.py": SLEEPER.format(name="one"), "test_two.py": SLEEPER.format(name="two"),
    })  # fmt: skip
    cmd = [sys.executable, str(SCRIPT), "--root", str(root), "--shards", "2", *runner_args(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a measure
        started = [root / "started-one", root / "started-two"]
        while not all(p.exists() and p.read_text() for p in started):
            assert proc.poll() is None and time.monotonic() < deadline, "shards did not start"
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in started]
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == tp.EXIT_INTERRUPTED, out
    assert "interrupting every shard once" in out
    # each shard heard it, and on its own block
    stopped = {(root / f"stopped-{n}").read_text() for n in ("one", "two")}
    assert stopped == {str(p) for p in FAKE_BLOCKS}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


LEAKY = """
    import os

    def test_up():
        os.makedirs(f"/tmp/gameday-lab-{os.environ['GAMEDAY_LAB_BASE_PORT']}/pg")
"""


def test_a_lab_left_behind_fails_the_run_and_is_swept(tmp_path: Path) -> None:
    # what a session that forgot `lab down` leaves: the lab's folder on its shard's block
    folders = [Path(f"/tmp/gameday-lab-{p}") for p in FAKE_BLOCKS]
    assert not any(f.exists() for f in folders)
    root = project(tmp_path, {"test_leaky.py": LEAKY, "test_fine.py": PASSING})
    try:
        out = run(root, "--shards", "2")
        assert out.returncode == 1, out.stdout + out.stderr
        leaked = re.findall(r"(shard \d) left behind: (\S+): stopping it", out.stdout)
        assert len(leaked) == 1 and Path(leaked[0][1]) in folders, out.stdout
        assert f"{leaked[0][0]}: FAILED: passed, but left a lab or deployment behind" in out.stdout
        assert not any(f.exists() for f in folders), "the sweep (gameday lab down) left it"
    finally:
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
