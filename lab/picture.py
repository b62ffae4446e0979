"""Draw the lab's network as an SVG: namespaces, links with their addresses, NATs, the outside.

`python -m lab.picture [--base-port N] > docs/lab-network.svg` draws the lab of a port block
(default 17400) from the same plan the lab is built from (lab/netplan.py), so the picture in
docs/lab.md cannot drift from the lab (a test keeps the committed file equal to it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from lab.layout import SERVERS, LabLayout
from lab.netplan import HOST, OUTSIDE, PUBLIC, VPC

WIDTH, HEIGHT = 1250, 720
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
COLORS = {
    HOST: "#eeeeee", VPC: "#dde6f5", PUBLIC: "#fff4c8", "a": "#d6ecff", "b": "#d9f2d9",
    "nat": "#ffe0c2", OUTSIDE: "#e8e0f0",
}  # fmt: skip


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    title: str
    lines: tuple[str, ...]
    fill: str

    @property
    def cx(self) -> int:
        return self.x + self.w // 2

    @property
    def cy(self) -> int:
        return self.y + self.h // 2

    def svg(self) -> str:
        out = [
            f"<rect x='{self.x}' y='{self.y}' width='{self.w}' height='{self.h}' rx='8' "
            f"fill='{self.fill}' stroke='#555' stroke-width='1.2'/>",
            _text(self.x + 10, self.y + 20, self.title, size=14, bold=True),
        ]
        for i, line in enumerate(self.lines):
            out.append(_text(self.x + 10, self.y + 40 + 16 * i, line, size=11.5))
        return "\n".join(out)


def _text(x: float, y: float, text: str, *, size: float = 12, bold: bool = False,
          anchor: str = "start", color: str = "#222") -> str:  # fmt: skip
    weight = " font-weight='bold'" if bold else ""
    return (
        f"<text x='{x:g}' y='{y:g}' {FONT} font-size='{size:g}'{weight} fill='{color}' "
        f"text-anchor='{anchor}'>{escape(text)}</text>"
    )


def _line(x1: float, y1: float, x2: float, y2: float, *, color: str = "#333",
          dashed: bool = False) -> str:  # fmt: skip
    dash = " stroke-dasharray='6 4'" if dashed else ""
    return (
        f"<line x1='{x1:g}' y1='{y1:g}' x2='{x2:g}' y2='{y2:g}' stroke='{color}' "
        f"stroke-width='2'{dash}/>"
    )


def render(layout: LabLayout) -> str:
    """The SVG of `layout`'s network (a lab with zone networks). Each box lists its own end of
    every link (interface, address); the lines only say which boxes a link joins."""
    net = layout.net

    def leg(here: str, there: str, address: str) -> str:
        return f"{net.ifname(here, there)} {address}"

    host = Box(415, 20, 330, 90, "this machine (root namespace)", (
        "the harness: probes, faults, `gameday lab status`",
        leg(HOST, VPC, f"{net.host_address}/28"),
        f"route {net.lab_range} via {net.router_host_address}",
    ), COLORS[HOST])  # fmt: skip
    vpc = Box(400, 160, 360, 170, f"{net.netns(VPC)}: the VPC's router", (
        f"{leg(VPC, HOST, net.router_host_address)}, "
        f"{leg(VPC, PUBLIC, net.router_public_address)}",
        f"{leg(VPC, 'a', net.router_zone_address('a'))}, "
        f"{leg(VPC, 'b', net.router_zone_address('b'))}",
        f"{leg(VPC, 'nat-a', net.router_nat_address('a'))}, "
        f"{leg(VPC, 'nat-b', net.router_nat_address('b'))}",
        f"main table: {net.lab_range} (the VPC's local route)",
        f"table {net.zone_table('a')} (from zone a): 0.0.0.0/0 via NAT a",
        f"table {net.zone_table('b')} (from zone b): 0.0.0.0/0 via NAT b",
        "no route anywhere else (never this machine's LAN)",
    ), COLORS[VPC])  # fmt: skip
    pub = Box(20, 160, 320, 170, f"{net.netns(PUBLIC)}: public subnet", (
        leg(PUBLIC, VPC, f"{net.public_address}/28"),
        f"HAProxy :{layout.http_port} entrypoint, :{layout.stats_port} stats,",
        f"   :{layout.redis_endpoint_port} the Redis primary endpoint",
        f"pg_auto_failover monitor :{layout.monitor_port}",
        f"sentinel3 :{layout.sentinel_ports()[2]}",
        "(the seed's load balancer host)",
    ), COLORS[PUBLIC])  # fmt: skip

    def zone_box(x: int, index: int) -> Box:
        s = SERVERS[index]
        z = s.zone
        return Box(x, 400, 330, 150, f"{net.netns(z)}: zone {z} ({s.name})", (
            leg(z, VPC, f"{layout.server_host(s)} in {net.zone_subnet(z)}"),
            f"{s.backend_program} :{layout.backend_port(s)}   "
            f"{s.postgres_program} :{layout.pg_port(s)}",
            f"{s.redis_program} :{layout.redis_port(s)}   "
            f"{s.sentinel_program} :{layout.sentinel_ports()[s.index - 1]}",
            "default route: the router, whose table",
            f"{net.zone_table(z)} sends it on to NAT {z}",
            f"(zone-outage: {net.ifname(z, VPC)} down)",
        ), COLORS[z])  # fmt: skip

    zone_a, zone_b = zone_box(20, 0), zone_box(410, 1)

    def nat_box(x: int, zone: str) -> Box:
        nat = net.nat(zone)
        return Box(x, 390, 220, 130, f"{net.netns(nat)}", (
            f"the NAT of zone {zone}",
            leg(nat, VPC, net.nat_inside_address(zone)),
            leg(nat, OUTSIDE, net.nat_public_address(zone)),
            f"MASQUERADE as {net.nat_public_address(zone)}",
            f"{net.chain('nat-off')}: empty",
            "(disable-nat: DROP)",
        ), COLORS["nat"])  # fmt: skip

    nat_a, nat_b = nat_box(790, "a"), nat_box(1020, "b")
    out = Box(840, 590, 360, 100, f"{net.netns(OUTSIDE)}: the internet", (
        f"{leg(OUTSIDE, 'nat-a', net.outside_peer_address('a'))}, "
        f"{leg(OUTSIDE, 'nat-b', net.outside_peer_address('b'))}",
        f"{net.outside_service_address}:{layout.outside_port} answers every GET with",
        "the address it sees: the zone's NAT",
    ), COLORS[OUTSIDE])  # fmt: skip

    lines = [
        _line(host.cx, host.y + host.h, vpc.cx, vpc.y),
        _line(pub.x + pub.w, pub.cy, vpc.x, vpc.cy),
        _line(vpc.cx - 60, vpc.y + vpc.h, zone_a.cx, zone_a.y),
        _line(vpc.cx + 20, vpc.y + vpc.h, zone_b.cx, zone_b.y),
        _line(vpc.x + vpc.w, vpc.y + 120, nat_a.cx, nat_a.y),
        _line(vpc.x + vpc.w, vpc.y + 60, nat_b.cx, nat_b.y),
        _line(nat_a.cx, nat_a.y + nat_a.h, nat_a.cx, out.y),
        _line(nat_b.cx, nat_b.y + nat_b.h, nat_b.cx, out.y),
        _line(zone_a.x + zone_a.w, zone_a.cy, zone_b.x, zone_b.cy, color="#c03030",
              dashed=True),
        _text((zone_a.x + zone_a.w + zone_b.x) / 2, zone_a.cy - 8, "split", size=11,
              anchor="middle", color="#c03030"),
    ]  # fmt: skip
    notes = (
        f"The lab on base port {layout.base_port} ({net.lab_range}): seven namespaces",
        f"named {net.prefix}*, eight veth pairs, one route on this",
        f"machine. zone-partition: chain {net.chain('split')} in both zones",
        "drops the other zone's subnet (red); both still reach the",
        "public side. `lab down` and `gameday heal` remove all of it.",
    )
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}'>",
        f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
        *lines,
        *(b.svg() for b in (host, vpc, pub, zone_a, zone_b, nat_a, nat_b, out)),
        *(_text(20, 590 + 20 * i, line, size=12.5) for i, line in enumerate(notes)),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.picture", description=__doc__)
    parser.add_argument("--base-port", type=int, default=17400)
    args = parser.parse_args(argv)
    layout = LabLayout(args.base_port, Path(f"/tmp/gameday-lab-{args.base_port}"),
                       network="namespaces")  # fmt: skip
    sys.stdout.write(render(layout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
