"""The project's shared names and constants, defined once (no imports: every stage may use it).

Sizes fix the order of tables (the modes' order is their registry's, cnibench.modes); PREFIX marks
everything the project leaves on a host, so `invoke clean` can find it (like containerlab's one
prefix function, `name` builds every prefixed name).
"""

SIZES: tuple[str, ...] = ("small", "large")  # response sizes nginx serves

PREFIX = "cnib"  # ownership prefix of every namespace, interface, table and file name we create
IFNAME_MAX = 15  # the kernel's interface-name limit (IFNAMSIZ - 1)
ROUTE_PROTO = "203"  # ownership marker on every route a mode adds (see /etc/iproute2/rt_protos)


def name(*parts: str, sep: str = "-") -> str:
    """A prefixed name: name("a", "pod") -> "cnib-a-pod"; name("cni0", sep="") -> "cnibcni0"."""
    return sep.join((PREFIX, *parts))
