"""One lab server's CPU and memory, as node-exporter would report them on a host of its own.

The lab's two "servers" share this machine (and other sessions share it with them): the
machine's /proc/stat and /proc/meminfo say how busy the machine is, not server1. A server of
the lab owns SERVER_CPUS CPU and SERVER_MEMORY_MB of memory (lab/layout.py); this program,
run as part of the server (it dies with it, like its node-exporter), measures the server's
processes against that envelope and serves node-exporter's metric names, so the seed's alert
rules read it unchanged:

    node_cpu_seconds_total{cpu="0",mode="user"|"system"|"idle"}   counters
    node_memory_MemTotal_bytes, node_memory_MemAvailable_bytes      gauges

The server's processes are its supervisor programs and everything they start, plus what the
resource faults run on it (their pid files under `<lab>/<server>/faults/`): stress-ng started
on server1 is server1's load. CPU is each process's user and system time (/proc/<pid>/stat),
summed every SAMPLE_SEC; per interval at most the server's CPUs' worth is counted and the
rest of the interval is idle, so the counters only grow and their rates add up to the
server's CPUs. Memory used is the processes' proportional set size (Pss, so PostgreSQL's
shared buffers count once). lxcfs would be the off-the-shelf way to give a process such a
view; its /proc/stat on this machine showed a cgroup that ran nothing as 98 % busy.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.layout import SERVER_CPUS, SERVER_MEMORY_MB, SERVERS, LabLayout, LabServer

SAMPLE_SEC = 0.5
PROGRAMS_REFRESH_SEC = 2.0
# Reading the processes' Pss (smaps_rollup: the kernel walks their page tables) was three
# quarters of a sample: 11 ms of 15 for a server's 24 processes, 4.5 % of a core per idle
# server. It is read again at once when the server's processes change or one's resident size
# moves by PSS_RSS_STEP_BYTES (a memory fault shows up in the next sample as before), and
# otherwise every PSS_REFRESH_SEC.
PSS_REFRESH_SEC = 2.0
PSS_RSS_STEP_BYTES = 1 << 20
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    start: int  # clock ticks after boot
    user: int  # clock ticks
    system: int
    rss: int = 0  # bytes resident


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    # proc(5): ppid is field 4, utime 14, stime 15, starttime 22, rss 24 (pages); `fields`
    # starts at field 3.
    return ProcStat(pid, int(fields[1]), int(fields[19]), int(fields[11]), int(fields[12]),
                    int(fields[21]) * PAGE_BYTES)  # fmt: skip


def process_table() -> dict[int, ProcStat]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                table[stat.pid] = stat
    return table


def descendants(roots: set[int], table: dict[int, ProcStat]) -> set[int]:
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found = {r for r in roots if r in table}
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def fault_pids(folder: Path, table: dict[int, ProcStat]) -> set[int]:
    """The processes the resource faults started on this server: `<pid> <start ticks>` in
    each pid file (the start time tells a reused pid apart)."""
    pids = set()
    for pidfile in folder.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid, start = (int(x) for x in pidfile.read_text().split()[:2])
            if pid in table and table[pid].start == start:
                pids.add(pid)
    return pids


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def pss_stale(read_at: dict[int, int], rss: dict[int, int], age_sec: float) -> bool:
    """Whether the Pss read when the processes' resident sizes were `read_at`, `age_sec`
    ago, must be read again for processes now resident as `rss`."""
    if age_sec >= PSS_REFRESH_SEC or read_at.keys() != rss.keys():
        return True
    return any(abs(rss[p] - read_at[p]) >= PSS_RSS_STEP_BYTES for p in rss)


class CpuMeter:
    """The server's CPU counters (seconds), fed with the per-process times every sample."""

    def __init__(self, cpus: int, boot_ticks_now: float) -> None:
        self.cpus = cpus
        self.user = 0.0
        self.system = 0.0
        self.idle = 0.0
        self._seen: dict[tuple[int, int], tuple[int, int]] = {}
        self._since = boot_ticks_now  # processes started after this count from their start
        self._last: float | None = None
        self._lock = threading.Lock()

    def sample(self, procs: list[ProcStat], now: float) -> None:
        user = system = 0
        seen: dict[tuple[int, int], tuple[int, int]] = {}
        for p in procs:
            key = (p.pid, p.start)
            before = self._seen.get(key)
            if before is None:
                # Seen for the first time: all of its time if it started after we did,
                # otherwise only what it uses from now on.
                before = (0, 0) if p.start >= self._since else (p.user, p.system)
            user += max(p.user - before[0], 0)
            system += max(p.system - before[1], 0)
            seen[key] = (p.user, p.system)
        with self._lock:
            self._seen = seen
            if self._last is None:
                self._last = now
                return
            capacity = self.cpus * (now - self._last)
            self._last = now
            busy = (user + system) / CLOCK_TICKS
            # At most the server's CPUs' worth per interval: a server cannot use more.
            scale = min(1.0, capacity / busy) if busy > 0 else 1.0
            self.user += user / CLOCK_TICKS * scale
            self.system += system / CLOCK_TICKS * scale
            self.idle += max(capacity - busy * scale, 0.0)

    def counters(self) -> dict[str, float]:
        with self._lock:
            return {"idle": self.idle, "system": self.system, "user": self.user}


class HostView:
    """Samples the server's processes in a thread and renders its metrics on demand."""

    def __init__(self, layout: LabLayout, server: LabServer) -> None:
        self.layout = layout
        self.server = server
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        self.cpu = CpuMeter(SERVER_CPUS, uptime * CLOCK_TICKS)
        self.memory_total = SERVER_MEMORY_MB * 1024 * 1024
        self._roots: set[int] = set()
        self._roots_at = 0.0
        self._pids: set[int] = set()
        self._stop = threading.Event()
        self._sampling = threading.Lock()
        self._sampled = 0.0  # monotonic time of the last sample
        self._sampled_wall_ms = 0  # its wall time: the timestamp of the samples served
        self._used = 0  # bytes (Pss) of the server's processes at the last sample
        self._pss_rss: dict[int, int] = {}  # each process's resident bytes when Pss was read
        self._pss_at = 0.0  # monotonic time Pss was last read

    def _program_pids(self) -> set[int]:
        """The pids of the server's supervisor programs (refreshed every few seconds)."""
        now = time.monotonic()
        if now - self._roots_at >= PROGRAMS_REFRESH_SEC:
            from lab import control

            with contextlib.suppress(Exception):  # supervisord restarting: keep the last
                info = control.processes(self.layout)
                self._roots = {
                    int(p["pid"]) for p in info.values() if p.get("group") == self.server.name
                    and p.get("pid")
                }  # fmt: skip
                self._roots_at = now
        return self._roots

    def sample(self) -> None:
        """Measure the server now: CPU counters and memory in use, with the wall time."""
        with self._sampling:
            roots = self._program_pids()
            # The processes' times are read during the scan: it is their moment, and on a
            # busy machine the scan itself may take a while. Timed by its middle, on both
            # clocks at once, so that the counters' intervals and their timestamps agree.
            before_mono, before_wall = time.monotonic(), time.time()
            table = process_table()
            now = (before_mono + time.monotonic()) / 2
            wall = (before_wall + time.time()) / 2
            faults = fault_pids(self.layout.server_faults_dir(self.server), table)
            pids = descendants(roots | faults, table)
            self.cpu.sample([table[p] for p in pids], now)
            rss = {p: table[p].rss for p in pids}
            if pss_stale(self._pss_rss, rss, now - self._pss_at):
                self._used = sum(pss_bytes(p) for p in sorted(pids))
                self._pss_rss, self._pss_at = rss, now
            self._pids = pids
            self._sampled, self._sampled_wall_ms = now, int(wall * 1000)

    def run_sampler(self) -> None:
        while not self._stop.wait(SAMPLE_SEC):
            with contextlib.suppress(Exception):  # a bad sample must not stop the view
                self.sample()

    def metrics(self) -> str:
        """The last sample; the CPU counters with the time they were measured. A scrape does
        no measuring itself: on a busy machine this program may answer late, and a counter
        timed by the scrape's start would then show a rate that never happened (a frozen
        idle counter reads as 100 % busy). With the measurement's own time, a late sample is
        placed where it belongs and a missing one leaves a gap, never a false alert. Gauges
        keep the scrape's time, so that they go stale when the server dies."""
        if not self._sampled:
            self.sample()
        at = self._sampled_wall_ms
        available = max(self.memory_total - self._used, 0)
        cpu = self.cpu.counters()
        lines = [
            "# HELP node_cpu_seconds_total Seconds the server's CPU spent in each mode "
            "(its processes' time against its envelope: lab/hostview.py).",
            "# TYPE node_cpu_seconds_total counter",
            *(f'node_cpu_seconds_total{{cpu="0",mode="{m}"}} {v:.3f} {at}' for m, v in cpu.items()),
            "# HELP node_memory_MemTotal_bytes The server's memory (its envelope).",
            "# TYPE node_memory_MemTotal_bytes gauge",
            f"node_memory_MemTotal_bytes {self.memory_total}",
            "# HELP node_memory_MemAvailable_bytes The envelope less the Pss of its processes.",
            "# TYPE node_memory_MemAvailable_bytes gauge",
            f"node_memory_MemAvailable_bytes {available}",
            "# HELP hostview_processes Processes counted as the server's.",
            "# TYPE hostview_processes gauge",
            f"hostview_processes {len(self._pids)}",
        ]
        return "\n".join(lines) + "\n"


def serve(view: HostView, host: str, port: int) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = view.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, choices=[s.name for s in SERVERS])
    # The server's address: its zone's with zone networks (it runs in the zone's namespace).
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--base-port", type=int, required=True)
    args = parser.parse_args()
    layout = LabLayout.from_env(base_port=args.base_port, state_dir=args.state_dir)
    server = next(s for s in SERVERS if s.name == args.server)
    view = HostView(layout, server)
    view.sample()
    threading.Thread(target=view.run_sampler, name="sampler", daemon=True).start()
    serve(view, args.host, args.port)


if __name__ == "__main__":
    main()
