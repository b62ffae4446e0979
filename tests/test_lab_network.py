"""The lab's network as data and as declared: the address plan of every port block, when the
lab can have namespaces and what it says when not, the target it renders, and how scenarios
that need zones on the wire skip on a lab or a deployment without them. No lab runs here."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.registry import fault_for, provided
from gameday.needs import Egress, Nodes
from gameday.target import FAULT_NAMES, Target, TargetError, _parse_target, load_target
from lab import configs, network
from lab import monitoring as labmon
from lab.layout import LOOPBACK, NAMESPACES, SERVERS, LabLayout, LayoutError
from lab.netplan import NetPlan
from lab.target import render_target

ROOT = Path(__file__).resolve().parent.parent
DOC_RANGES = [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/24")]


def layout(port: int = 17400, net: str = NAMESPACES, note: str = "") -> LabLayout:
    return LabLayout(port, Path(f"/tmp/gameday-lab-{port}"), network=net, network_note=note)


# -- the address plan ----------------------------------------------------------------------


@pytest.mark.parametrize("port", [1025, 17400, 17450, 18800, 18850, 65485])
def test_every_name_and_address_of_a_block_is_its_own(port: int) -> None:
    plan = NetPlan(port)
    lab = ipaddress.ip_network(plan.lab_range)
    for link in plan.links():
        for name in (link.left, link.right):
            assert name.startswith(plan.prefix) and len(name) <= 15, name  # the kernel's limit
        for address in (link.left_address, link.right_address):
            ip = ipaddress.ip_address(address)
            # The lab's own /24, or the documentation ranges that exist only in its namespaces.
            assert ip in lab or any(ip in r for r in DOC_RANGES), address
        left = ipaddress.ip_interface(f"{link.left_address}/{link.prefixlen}")
        assert ipaddress.ip_address(link.right_address) in left.network  # one subnet per link
    assert all(ns.startswith(plan.prefix) for ns in plan.namespaces)
    assert len(set(plan.namespaces)) == 7
    subnets = [
        ipaddress.ip_interface(f"{link.left_address}/{link.prefixlen}").network
        for link in plan.links()
    ]
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    for zone in ("a", "b"):
        assert ipaddress.ip_address(plan.zone_address(zone)) in ipaddress.ip_network(
            plan.zone_subnet(zone)
        )
    assert plan.nat_public_address("a") != plan.nat_public_address("b")


def test_two_base_ports_never_share_a_range_or_a_name() -> None:
    plans = [NetPlan(p) for p in range(1025, 65486, 7)]
    assert len({p.lab_range for p in plans}) == len(plans)
    assert len({p.prefix for p in plans}) == len(plans)
    # Not the machine's own ranges either: loopback, or the documentation ranges it uses inside.
    for plan in plans[:: max(1, len(plans) // 50)]:
        lab = ipaddress.ip_network(plan.lab_range)
        assert lab.subnet_of(ipaddress.ip_network("10.0.0.0/8"))


# -- namespaces or loopback ------------------------------------------------------------------


def test_the_lab_says_why_it_cannot_have_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert network.unavailable() == "not root (network namespaces need root)"
    monkeypatch.setenv("GAMEDAY_LAB_NETWORK", "loopback")
    assert network.unavailable() == "GAMEDAY_LAB_NETWORK=loopback"
    monkeypatch.delenv("GAMEDAY_LAB_NETWORK")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(network, "_capabilities", lambda: 0)
    assert network.unavailable() == (
        "root without CAP_NET_ADMIN (a container without it cannot make namespaces)"
    )


def test_a_layout_without_namespaces_runs_everything_on_loopback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GAMEDAY_LAB_NETWORK", "loopback")
    lab = LabLayout.from_env(base_port=18400, state_dir=str(tmp_path / "lab"))
    assert (lab.network, lab.network_note) == (LOOPBACK, "GAMEDAY_LAB_NETWORK=loopback")
    assert {host for host, _ in lab.endpoints()} == {"127.0.0.1"}
    assert lab.outside_url is None
    assert not any("nsenter" in p.command for p in configs.programs(lab))
    text = render_target(lab)
    assert 'network: loopback\n  network_note: "GAMEDAY_LAB_NETWORK=loopback"' in text
    assert "egress:" not in text
    # A lab keeps the network it was started with: its folder says which.
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "network").write_text("namespaces\n\n")
    assert LabLayout.from_env(base_port=18400, state_dir=str(tmp_path / "lab")).namespaced


def test_a_bad_network_choice_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMEDAY_LAB_NETWORK", "bridge")
    with pytest.raises(LayoutError, match=r"^GAMEDAY_LAB_NETWORK='bridge' is not"):
        LabLayout.from_env(base_port=18400, state_dir="/tmp/gameday-lab-never-made")
    proc = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "lab", "target", "--base-port", "18400"],
        env={**os.environ, "GAMEDAY_LAB_NETWORK": "bridge", "GAMEDAY_LAB_DIR": "/tmp/nope-x"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "gameday: GAMEDAY_LAB_NETWORK='bridge' is not namespaces or loopback"
    )


def test_programs_enter_their_hosts_namespace_and_postgres_drops_root_there() -> None:
    lab = layout(17400)
    rendered = {p.name: configs.in_place(lab, p) for p in configs.programs(lab)}
    command, user = rendered["backend1"]
    assert command.startswith("/usr/bin/nsenter --net=/run/netns/gd17400-a -- ")
    assert f"--host {lab.net.zone_address('a')}" in command and user is None
    assert rendered["haproxy"][0].startswith("/usr/bin/nsenter --net=/run/netns/gd17400-pub ")
    assert rendered["outside"][0].startswith("/usr/bin/nsenter --net=/run/netns/gd17400-out ")
    if os.geteuid() == 0:
        command, user = rendered["postgres2"]
        assert "--net=/run/netns/gd17400-b --setgid=" in command and "--setuid=" in command
        assert user is None  # nsenter drops to postgres once inside; supervisord must not


def test_the_monitoring_lives_in_the_lab_network_where_its_hosts_are() -> None:
    """Each server's exporters and CPU/memory view in its zone on its address (a lost zone
    takes their answers along); Prometheus and Alertmanager on the public side; every scrape
    target at the address of its host; the webhook on the machine's own address."""
    lab = layout(17400)
    a, b, pub = lab.net.zone_address("a"), lab.net.zone_address("b"), lab.net.public_address
    rendered = {p.name: configs.in_place(lab, p)[0] for p in configs.programs(lab)}
    for name, netns, host, port in (
        ("node-exporter1", "gd17400-a", a, lab.base_port + 12),
        ("hostview1", "gd17400-a", a, lab.base_port + 14),
        ("pg-exporter2", "gd17400-b", b, lab.base_port + 24),
        ("redis-exporter2", "gd17400-b", b, lab.base_port + 33),
        ("prometheus", "gd17400-pub", pub, lab.prometheus_port),
        ("alertmanager", "gd17400-pub", pub, lab.alertmanager_port),
    ):
        command = rendered[name]
        assert command.startswith(f"/usr/bin/nsenter --net=/run/netns/{netns} -- "), name
        assert f"{host}:{port}" in command or f"--host {host} --port {port}" in command, name
        assert "127.0.0.1" not in command, name
    yml = labmon.prometheus_yml(
        lab, labmon.LAB, ports=(lab.prometheus_port, lab.alertmanager_port), host=pub
    )
    scraped = set(re.findall(r"'(\d+\.\d+\.\d+\.\d+):(\d+)'", yml))
    assert {h for h, _ in scraped} == {a, b, pub}
    assert (a, str(lab.pg_exporter_port(SERVERS[0]))) in scraped
    assert (pub, str(lab.stats_port)) in scraped  # HAProxy's /metrics
    assert (pub, str(lab.alertmanager_port)) in scraped
    assert lab.receiver_address == f"{lab.net.host_address}:{lab.receiver_port}"
    assert f"url: 'http://{lab.receiver_address}/" in labmon.alertmanager_yml(
        labmon.LAB, lab.receiver_address
    )
    # A lab without namespaces keeps all of it on 127.0.0.1.
    loop = layout(17400, LOOPBACK, "GAMEDAY_LAB_NETWORK=loopback")
    yml = labmon.prometheus_yml(loop, labmon.LAB, ports=(loop.prometheus_port, 1))
    assert set(re.findall(r"'(\d+\.\d+\.\d+\.\d+):", yml)) == {"127.0.0.1"}
    assert loop.receiver_address == f"127.0.0.1:{loop.receiver_port}"


def test_the_target_of_a_lab_with_namespaces_declares_its_zones_egress() -> None:
    target = _parse_target(render_target(layout(17400)), "lab")
    assert target.lab is not None and target.lab.network == "namespaces"
    assert target.egress is not None and target.egress.via == "netns"
    assert target.egress_zones() == ["a", "b"]
    assert target.egress.zones["a"].netns == "/run/netns/gd17400-a"
    assert target.cache is not None and len(target.cache.nodes) == 2
    assert Egress().why_not(target, {}) is None
    assert Nodes("database").why_not(target, {}) is None
    assert Nodes("cache").why_not(target, {}) is None
    for name in ("disable-nat", "zone-outage", "zone-partition"):
        assert provided(target, name)[0] == "built-in"


# -- skipping with the reason ----------------------------------------------------------------


def test_a_lab_on_loopback_skips_the_network_scenarios_saying_why() -> None:
    target = _parse_target(render_target(layout(17400, LOOPBACK, "not root (x)")), "lab")
    assert Egress().why_not(target, {}) == (
        "the lab runs on 127.0.0.1 without zone networks: not root (x)"
    )
    source, why = provided(target, "zone-partition")
    assert source is None
    assert why == (
        "target 'lab' cannot provide 'zone-partition' (the lab runs on 127.0.0.1 without zone "
        "networks: not root (x)): declare it under faults: (docs/resilience.md)"
    )


def generic(extra: str = "") -> Target:
    text = (
        "name: shop\nprovider: generic\nentrypoint:\n  url: http://127.0.0.1:9\n"
        "servers:\n  - name: web1\n    zone: a\n    url: http://127.0.0.1:10\n" + extra
    )
    return _parse_target(text, "shop.yaml")


def test_a_deployment_without_egress_or_nodes_skips_saying_how_to_declare_them() -> None:
    target = generic()
    assert Egress().why_not(target, {}) == (
        "target 'shop' declares no egress (egress: how to ask each zone whether it reaches the "
        "internet, docs/targets.md)"
    )
    assert Nodes("cache").why_not(target, {}) == (
        "target 'shop' has no cache role (declare cache: url)"
    )
    with_servers = generic("egress:\n  via: servers\n")
    assert with_servers.egress_zones() == ["a"]
    assert Egress(arg="zone").why_not(with_servers, {"zone": "b"}) == (
        "target 'shop' probes no egress in zone 'b' (zones: a)"
    )


def test_providers_that_cannot_split_zones_say_what_can(monkeypatch: pytest.MonkeyPatch) -> None:
    for secret in ("CLOUDMART_DB_PASSWORD", "CLOUDMART_REDIS_AUTH_TOKEN"):
        monkeypatch.setenv(secret, "x")
    assert "zone-partition" in FAULT_NAMES
    docker = load_target(str(ROOT / "targets" / "docker-lab.yaml"))
    source, why = provided(docker, "zone-partition")
    assert source is None and "the Docker Engine API cannot drop traffic between hosts" in why
    assert "disable-nat" in provided(docker, "disable-nat")[1]
    aws = load_target(str(ROOT / "targets" / "aws.example.yaml"))
    source, why = provided(aws, "zone-partition")
    assert source is None and "AWS has no call that splits two zones of a VPC" in why
    assert provided(aws, "disable-nat")[0] == "built-in"  # the route removal stays
    source, why = provided(generic(), "zone-partition")
    assert source is None and why.startswith("target 'shop' provides no 'zone-partition'")


def test_a_declared_partition_gets_both_zones() -> None:
    target = generic(
        "faults:\n  zone-partition:\n    inject: ./split.sh {zone} {peer}\n"
        "    heal: ./join.sh {zone} {peer}\n"
    )
    fault = fault_for(target, "zone-partition", {"zone": "a", "peer": "b"})
    assert fault.params["inject"] == "./split.sh a b"
    assert fault.params["heal"] == "./join.sh a b"


@pytest.mark.parametrize(
    ("egress", "line"),
    [
        ("egress:\n  via: netns\n",
         "shop.yaml: egress: via: netns needs the internet service's url and zones: "
         "{zone: netns}"),
        ("egress:\n  via: netns\n  url: http://203.0.113.10:80/\n  zones:\n"
         "    c:\n      netns: /run/netns/x\n",
         "shop.yaml: egress.zones.c: no server is in zone 'c' (zones: a)"),
        ("egress:\n  via: routes\n",
         "shop.yaml: egress: via routes needs the aws section's zones (their NATs)"),
        ("egress:\n  via: carrier-pigeon\n",
         "shop.yaml: egress.via: 'carrier-pigeon' is not one of 'servers', 'netns' or "
         "'routes'"),
    ],
)  # fmt: skip
def test_a_bad_egress_declaration_is_one_line(egress: str, line: str) -> None:
    with pytest.raises(TargetError) as info:
        generic(egress)
    assert str(info.value) == line


def test_the_picture_in_the_docs_is_the_lab_as_planned() -> None:
    # docs/lab-network.svg is drawn by `python -m lab.picture` from the plan the lab is built
    # from: a drift between them would show a network the lab does not have.
    from lab.picture import render

    assert (ROOT / "docs" / "lab-network.svg").read_text() == render(layout(17400))
