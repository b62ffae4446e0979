"""The lab's network as data: namespaces, links, addresses, routes and NAT rules of one port block.

The seed's AWS shape, on one machine: a VPC router (`vpc`) joins the public subnet (`pub`:
HAProxy, the pg_auto_failover monitor, the third Sentinel), one private subnet per zone (`a`:
server1's programs, `b`: server2's) and one NAT per zone (`nat-a`, `nat-b`), whose other leg
leads to `out`, which stands for the internet (an HTTP service there answers with the address it
sees). Each zone's route table on the router sends 0.0.0.0/0 to its own NAT, which masquerades
behind its public address. The machine itself (the harness) reaches the VPC through one veth,
`host`, with a route to the lab's range.

Everything is named after the port block (`gd17400-...`), so two labs, and other sessions'
namespaces, never meet: the lab range is 10.H.L.0/24 with H.L = base port - 1024 (a /24 per
base port, unique on the machine); the internet side (198.51.100.0/24, 203.0.113.0/24, the
documentation ranges) exists only inside the lab's own namespaces. Pure data, no I/O:
lab/network.py makes it real, the layout takes its addresses from it, the picture in docs/ is
drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
# Where each zone's route table lives on the router (`ip route ... table N`).
ZONE_TABLE_BASE = 100
SUBNET_BITS = 28  # each subnet of the lab range is a /28
ZONES = ("a", "b")
OUTSIDE_SERVICE_ADDRESS = "203.0.113.10"
# iptables chains the faults fill (and their heal flushes); the lab's own rules stay apart.
NAT_OFF_CHAIN = "nat-off"
SPLIT_CHAIN = "split"

# Places of the lab's network, each a namespace (the host is the machine's own).
VPC, PUBLIC, OUTSIDE, HOST = "vpc", "pub", "out", "host"


@dataclass(frozen=True)
class Link:
    """A veth pair: `left` in namespace `left_ns`, `right` in `right_ns` (None: the host's
    own namespace), with their addresses on one /28 (or /30 on the internet side)."""

    left_ns: str | None
    left: str
    left_address: str
    right_ns: str
    right: str
    right_address: str
    prefixlen: int


@dataclass(frozen=True)
class Route:
    """A route in namespace `ns` (None: the host's): `dest` via `via` in `table`."""

    ns: str | None
    dest: str
    via: str
    table: str = "main"


@dataclass(frozen=True)
class NetPlan:
    """The network of the lab on `base_port`."""

    base_port: int

    # -- names ---------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """Every namespace, link and chain of this lab starts with it."""
        return f"gd{self.base_port}-"

    def netns(self, place: str) -> str:
        """The namespace of a place: vpc, pub, out, a zone ("a") or its NAT ("nat-a")."""
        return self.prefix + place

    def netns_path(self, place: str) -> Path:
        return NETNS_DIR / self.netns(place)

    def nat(self, zone: str) -> str:
        return f"nat-{zone}"

    @property
    def places(self) -> tuple[str, ...]:
        """Every namespace the lab makes, in the order it makes them."""
        return (VPC, PUBLIC, *ZONES, *(self.nat(z) for z in ZONES), OUTSIDE)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self.netns(p) for p in self.places)

    def ifname(self, here: str, there: str) -> str:
        """The end in `here` of the link to `there` ("gd17400-a-v": in zone a, to the vpc);
        at most 15 characters, the kernel's limit."""
        short = {VPC: "v", PUBLIC: "p", OUTSIDE: "o", HOST: "h"}

        def code(place: str) -> str:
            return short.get(place, place.replace("nat-", "n"))

        return f"{self.prefix}{code(here)}-{code(there)}"

    def chain(self, name: str) -> str:
        return self.prefix + name

    # -- addresses -----------------------------------------------------------------------
    @property
    def _net(self) -> tuple[int, int]:
        n = self.base_port - 1024
        return n >> 8, n & 255

    def _addr(self, last: int) -> str:
        hi, lo = self._net
        return f"10.{hi}.{lo}.{last}"

    @property
    def lab_range(self) -> str:
        return self._addr(0) + "/24"

    def _subnet(self, index: int) -> int:
        return index * (1 << (32 - SUBNET_BITS))

    def _zone_index(self, zone: str) -> int:
        return ZONES.index(zone)

    # subnet 0: the host link; 1: public; 2, 3: zones; 6, 7: the NATs' inside legs
    @property
    def host_address(self) -> str:
        """The machine's own address on the lab's network (where the harness comes from)."""
        return self._addr(self._subnet(0) + 1)

    @property
    def router_host_address(self) -> str:
        return self._addr(self._subnet(0) + 2)

    @property
    def public_address(self) -> str:
        """HAProxy, the monitor and the third Sentinel (the seed's public subnet)."""
        return self._addr(self._subnet(1) + 2)

    @property
    def router_public_address(self) -> str:
        return self._addr(self._subnet(1) + 1)

    def zone_subnet(self, zone: str) -> str:
        return f"{self._addr(self._subnet(2 + self._zone_index(zone)))}/{SUBNET_BITS}"

    def zone_address(self, zone: str) -> str:
        """The address of the server in `zone` (all its programs: it is one host)."""
        return self._addr(self._subnet(2 + self._zone_index(zone)) + 2)

    def router_zone_address(self, zone: str) -> str:
        return self._addr(self._subnet(2 + self._zone_index(zone)) + 1)

    def nat_inside_address(self, zone: str) -> str:
        return self._addr(self._subnet(6 + self._zone_index(zone)) + 2)

    def router_nat_address(self, zone: str) -> str:
        return self._addr(self._subnet(6 + self._zone_index(zone)) + 1)

    def nat_public_address(self, zone: str) -> str:
        """What the internet sees of the zone's traffic (an Elastic IP's part)."""
        return f"198.51.100.{4 * self._zone_index(zone) + 2}"

    def outside_peer_address(self, zone: str) -> str:
        return f"198.51.100.{4 * self._zone_index(zone) + 1}"

    @property
    def outside_service_address(self) -> str:
        return OUTSIDE_SERVICE_ADDRESS

    def zone_table(self, zone: str) -> int:
        """The router's route table of `zone`'s subnet (0.0.0.0/0 -> the zone's NAT)."""
        return ZONE_TABLE_BASE + 1 + self._zone_index(zone)

    # -- what the lab makes --------------------------------------------------------------
    def links(self) -> tuple[Link, ...]:
        out = [
            Link(None, self.ifname(HOST, VPC), self.host_address,
                 self.netns(VPC), self.ifname(VPC, HOST), self.router_host_address, SUBNET_BITS),
            Link(self.netns(PUBLIC), self.ifname(PUBLIC, VPC), self.public_address,
                 self.netns(VPC), self.ifname(VPC, PUBLIC), self.router_public_address,
                 SUBNET_BITS),
        ]  # fmt: skip
        for z in ZONES:
            out.append(Link(
                self.netns(z), self.ifname(z, VPC), self.zone_address(z),
                self.netns(VPC), self.ifname(VPC, z), self.router_zone_address(z), SUBNET_BITS,
            ))  # fmt: skip
        for z in ZONES:
            nat = self.nat(z)
            out.append(Link(
                self.netns(nat), self.ifname(nat, VPC), self.nat_inside_address(z),
                self.netns(VPC), self.ifname(VPC, nat), self.router_nat_address(z), SUBNET_BITS,
            ))  # fmt: skip
            out.append(Link(
                self.netns(nat), self.ifname(nat, OUTSIDE), self.nat_public_address(z),
                self.netns(OUTSIDE), self.ifname(OUTSIDE, nat), self.outside_peer_address(z),
                30,
            ))  # fmt: skip
        return tuple(out)

    def zone_link(self, zone: str) -> str:
        """The zone's only link (to the router): a zone outage takes it down."""
        return self.ifname(zone, VPC)

    def routes(self) -> tuple[Route, ...]:
        """Every route beyond the links' own subnets."""
        out = [
            Route(None, self.lab_range, self.router_host_address),
            Route(self.netns(PUBLIC), self.lab_range, self.router_public_address),
        ]
        for z in ZONES:
            out.append(Route(self.netns(z), "default", self.router_zone_address(z)))
            nat = self.netns(self.nat(z))
            out.append(Route(nat, self.lab_range, self.router_nat_address(z)))
            out.append(Route(nat, "default", self.outside_peer_address(z)))
            # The zone's route table: the internet through the zone's own NAT.
            out.append(
                Route(self.netns(VPC), "default", self.nat_inside_address(z),
                      str(self.zone_table(z)))
            )  # fmt: skip
        return tuple(out)

    def policy_rules(self) -> tuple[str, ...]:
        """The router's `ip rule`s: the lab's own range by the main table (the VPC's "local"
        route), anything else by the route table of the subnet it came from."""
        rules = [f"to {self.lab_range} lookup main pref 100"]
        for z in ZONES:
            rules.append(
                f"iif {self.ifname(VPC, z)} lookup {self.zone_table(z)} pref {self.zone_table(z)}"
            )
        return tuple(rules)
