"""The lab's Docker mode: each program of the lab runs as a container on a Docker Engine API.

`gameday lab up --runtime docker` starts the same programs as supervisord would (lab.configs
`programs`), each in a container of its own on a podman service the lab runs for itself
(lab/podman.py), on the host's network. The containers are grouped like Docker Compose
projects: `com.docker.compose.project=gameday-lab-<base port>-<host>` (server1, server2,
control) and `com.docker.compose.service=<program>`, so `targets/docker-lab.yaml` reaches a
server's containers exactly as it would reach a real Compose host, and the Docker faults
(chaos/docker.py) stop, kill and start real containers.

Every container carries a healthcheck (pg_isready, redis-cli ping, the backend's /health), so
a Docker heal waits for real health, not only for a running process.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any

from lab.configs import Program, programs
from lab.layout import PG_BIN, PROJECT_ROOT, LabLayout
from lab.podman import IMAGE, PodmanService, host_volumes, ulimits

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
LAB_LABEL = "org.gameday.lab"
RUNTIME_FILE = "runtime"
# supervisor's words for a program's state, which the lab's `up` and status understand.
_STATENAME = {
    "running": "RUNNING",
    "paused": "STOPPED",
    "created": "STOPPED",
    "exited": "EXITED",
    "stopped": "STOPPED",
    "dead": "FATAL",
}
HEALTH_INTERVAL_NS = 2_000_000_000
STOP_TIMEOUT_SEC = 15
# The CPU weight of each container, in the kernel's unit: 1024 is one ordinary (nice 0)
# process of the host. Programs run by supervisord compete for the CPU one process at a
# time; a container competes as one whole. A PostgreSQL node is several processes busy at
# once (a backend per client, the WAL sender or receiver, pg_autoctl's keeper, the
# monitor's health checks), so it weighs as several.
CPU_SHARES = {"postgres": 4 * 1024}
CPU_SHARES_DEFAULT = 1024
# Each container's cgroup straight under the root, beside the host's own processes. Under
# podman's default parent (libpod_parent) every container of the lab shares ONE weight of
# 1024: on a busy machine the whole lab then gets what a single host process gets, its
# processes wait several times longer for a CPU than the host's, and pg_auto_failover's
# monitor (a node unhealthy after 3 s without a report) demotes a healthy standby.
CGROUP_PARENT = "/"


def runtime_of(layout: LabLayout) -> str:
    """ "docker" or "supervisor": how the lab in this folder was started."""
    try:
        return (layout.state_dir / RUNTIME_FILE).read_text().strip() or "supervisor"
    except OSError:
        return "supervisor"


def engine(layout: LabLayout) -> PodmanService:
    # Next to the state folder, not in it: containers mount the state folder.
    return PodmanService(layout.state_dir.with_name(layout.state_dir.name + "-engine"))


def project(layout: LabLayout, group: str) -> str:
    return f"gameday-lab-{layout.base_port}-{group}"


def container_name(layout: LabLayout, program: str) -> str:
    return f"gameday-lab-{layout.base_port}-{program}"


def _spec(layout: LabLayout, name: str) -> Program:
    for p in programs(layout):
        if p.name == name:
            return p
    raise KeyError(f"the lab has no program {name!r}")


def _healthcheck(p: Program) -> dict[str, Any] | None:
    port = str(p.port)
    if p.kind == "postgres":
        test = ["CMD", str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port]
    elif p.kind in ("redis", "sentinel"):
        test = ["CMD", "/usr/bin/redis-cli", "-p", port, "ping"]
    elif p.kind == "backend":
        url = f"http://127.0.0.1:{port}/health"
        code = f"import urllib.request as u; u.urlopen({url!r}, timeout=2)"
        test = ["CMD", shlex.split(p.command)[0], "-c", code]
    else:
        return None
    # CMD-SHELL with one quoted line: podman's compatible API splits a CMD test's arguments
    # on spaces, which breaks `python -c "..."`.
    return {"test": ["CMD-SHELL", shlex.join(test[1:])], "interval": HEALTH_INTERVAL_NS,
            "timeout": HEALTH_INTERVAL_NS, "retries": 3}  # fmt: skip


def _create(client: Any, layout: LabLayout, p: Program) -> Any:
    env = {
        "PATH": f"{PG_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        # initdb takes the encoding from the locale: UTF8, as on the host.
        "LANG": "C.UTF-8",
        **p.env,
    }
    if "XDG_RUNTIME_DIR" in env:
        # pg_autoctl's pid files belong on the container's fresh /tmp (see tmpfs below), not
        # in the lab's folder, which outlives the container.
        env["XDG_RUNTIME_DIR"] = "/tmp"
    if "PG_REGRESS_SOCK_DIR" in env:
        # PostgreSQL's unix socket too, for its lock file: a SIGKILLed postmaster leaves
        # `.s.PGSQL.<port>.lock` naming its pid, and a restarted container hands out the
        # same few pids again. In the lab's folder, the next postmaster found that pid alive
        # (another process of the new container), stopped with "lock file ... already
        # exists", and pg_autoctl waited for it for good: the old primary never rejoined.
        env["PG_REGRESS_SOCK_DIR"] = env["PGHOST"] = "/tmp"
    kwargs: dict[str, Any] = {}
    check = _healthcheck(p)
    if check is not None:
        kwargs["healthcheck"] = check
    argv = shlex.split(p.command)
    if p.kind == "haproxy":
        # maxconn 4096 wants 8k file descriptors; a container may hold 1024 here.
        argv += ["-n", "400"]
    return client.containers.create(
        IMAGE,
        argv,
        name=container_name(layout, p.name),
        labels={
            COMPOSE_PROJECT: project(layout, p.group),
            COMPOSE_SERVICE: p.name,
            LAB_LABEL: str(layout.base_port),
        },
        network_mode="host",
        ulimits=ulimits(),
        volumes=_volumes(layout),
        user=p.user or "",
        environment=env,
        working_dir=str(p.directory or layout.state_dir),
        # A fresh /tmp on every start, as a host's after a reboot: pg_autoctl's pid file
        # there would otherwise name PID 1, which is the new pg_autoctl itself.
        tmpfs={"/tmp": "rw,mode=1777"},
        cgroup_parent=CGROUP_PARENT,
        cpu_shares=CPU_SHARES.get(p.kind, CPU_SHARES_DEFAULT),
        stop_signal=f"SIG{p.stopsignal}",
        # The program's output where supervisord would have put it: `gameday lab logs` works.
        log_config={"type": "k8s-file", "config": {"path": str(_log(layout, p.name))}},
        **kwargs,
    )


def _volumes(layout: LabLayout) -> dict[str, dict[str, str]]:
    volumes = host_volumes({str(layout.state_dir): str(layout.state_dir)})
    # The backend runs this checkout's Python environment, and its interpreter may live
    # outside /usr (pyenv, a venv's base): both are mounted read-only at the same paths.
    for folder in (PROJECT_ROOT, Path(sys.base_prefix)):
        if not any(str(folder).startswith(h + "/") for h in volumes):
            volumes[str(folder)] = {"bind": str(folder), "mode": "ro"}
    return volumes


def _log(layout: LabLayout, name: str) -> Path:
    return layout.log_dir / f"{name}.log"


def start_engine(layout: LabLayout) -> None:
    engine(layout).start()


def is_running(layout: LabLayout) -> bool:
    return engine(layout).is_running()


def _containers(client: Any, layout: LabLayout) -> dict[str, Any]:
    found = client.containers.list(all=True, filters={"label": [f"{LAB_LABEL}={layout.base_port}"]})
    return {c.labels.get(COMPOSE_SERVICE, c.name): c for c in found}


def processes(layout: LabLayout) -> dict[str, dict[str, Any]]:
    """The containers in supervisor's terms: program -> statename, pid, group."""
    with engine(layout).client() as client:
        out: dict[str, dict[str, Any]] = {}
        for name, c in _containers(client, layout).items():
            state = c.attrs.get("State") or {}
            status = str(state.get("Status") or c.status)
            statename = _STATENAME.get(status, "UNKNOWN")
            if status == "exited" and int(state.get("ExitCode") or 0) not in (0, 130, 143):
                statename = "FATAL"  # died on its own: no supervisor retries it
            out[name] = {
                "name": name,
                "statename": statename,
                "pid": int(state.get("Pid") or 0),
                "group": c.labels.get(COMPOSE_PROJECT, ""),
            }
        return out


def start_programs(layout: LabLayout, names: list[str]) -> None:
    with engine(layout).client() as client:
        existing = _containers(client, layout)
        for name in names:
            container = existing.get(name)
            if container is not None and container.status == "paused":
                container.unpause()
                continue
            if container is not None and container.status == "running":
                continue
            if container is not None:
                # Made afresh from today's layout: its state lives in the lab's folder.
                container.remove(force=True)
            _create(client, layout, _spec(layout, name)).start()


def stop_programs(layout: LabLayout, names: list[str], *, wait: bool = True) -> None:
    with engine(layout).client() as client:
        existing = _containers(client, layout)
        for name in names:
            container = existing.get(name)
            if container is None or container.status not in ("running", "paused"):
                continue
            if wait:
                container.stop(timeout=STOP_TIMEOUT_SEC)
            else:
                container.kill(signal=f"SIG{_spec(layout, name).stopsignal}")


def signal_program(layout: LabLayout, name: str, sig: str) -> None:
    with engine(layout).client() as client:
        _containers(client, layout)[name].kill(signal=f"SIG{sig}")


def down(layout: LabLayout) -> None:
    """Remove every container and stop the engine; the caller removes the folders."""
    eng = engine(layout)
    eng.stop()
    import shutil

    shutil.rmtree(eng.home, ignore_errors=True)
    _remove_conmon_cgroups()


def _remove_conmon_cgroups() -> None:
    """podman puts its container monitors (conmon) in `<cgroup parent>/conmon`, which under
    CGROUP_PARENT is a cgroup of the root that nothing removes. Removed once empty; a
    Docker lab on another port still using it keeps it (the kernel refuses: busy)."""
    for folder in Path("/sys/fs/cgroup").glob(f"*{CGROUP_PARENT.rstrip('/')}/conmon"):
        with contextlib.suppress(OSError):
            folder.rmdir()
