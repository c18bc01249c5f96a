"""The registry of mode kinds, and the one registry style the project uses (the load generators'
too, workload/generators): named things registered once at import, looked up by name, an
unknown name refused with the known ones and the closest match.

    from cnibench.modes.registry import MODES
    MODES.register(MyMode())                   # a new mode, or another implementation of one
    MODES.get("flannel-vxlan")                 # the project's own plan
    MODES.get("flannel-vxlan", "other")        # a named implementation of the same mode
    MODES.names()                              # every mode, in the tables' fixed order

This module and modes/kinds/ are the only places that name a mode kind.
"""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from ..errors import PlanError
from ..infra.kernelprobe import LinkKind
from .base import NetworkMode
from .kinds.calico import CalicoRouted, CalicoRoutedCni
from .kinds.docker_bridge import DockerBridge, DockerBridgeCni
from .kinds.ebpf import EbpfRedirect
from .kinds.flannel import (
    FlannelAwsVpc,
    FlannelAwsVpcCni,
    FlannelHostGw,
    FlannelHostGwCni,
    FlannelVxlan,
    FlannelVxlanCni,
)
from .kinds.host import HostMode
from .kinds.ipvlan import Ipvlan, IpvlanCni
from .kinds.macvlan import Macvlan, MacvlanCni

T = TypeVar("T")
DEFAULT = "project"  # the implementation a lookup without one gets: the project's own


class Registry(Generic[T]):
    """Name -> implementation name -> object, in registration order. Iterating, `in` and
    `[name]` see the names and the default implementations (a drop-in for a dict)."""

    def __init__(self, what: str, error: type[Exception] = KeyError, plural: str | None = None):
        self.what, self.error, self.plural = what, error, plural or f"{what}s"
        self._items: dict[str, dict[str, T]] = {}

    def register(self, item: T) -> T:
        """Add `item` under its `name` and `implementation` (default DEFAULT); a second
        registration of the same pair is refused."""
        impl = getattr(item, "implementation", DEFAULT)
        impls = self._items.setdefault(item.name, {})
        if impl in impls:
            raise ValueError(f"{self.what} {item.name!r} already has an implementation {impl!r}")
        impls[impl] = item
        return item

    def unregister(self, name: str, implementation: str = DEFAULT) -> None:
        impls = self._items.get(name, {})
        impls.pop(implementation, None)
        if not impls:
            self._items.pop(name, None)

    def get(self, name: str, implementation: str | None = None) -> T:
        impls = self._items.get(name)
        if impls is None:
            close = difflib.get_close_matches(str(name), list(self._items), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise self.error(f"unknown {self.what} '{name}'.{hint} Known {self.plural}: {', '.join(self._items)}.")
        impl = implementation or DEFAULT
        if impl not in impls:
            raise self.error(f"{self.what} '{name}' has no implementation '{impl}'. Known: {', '.join(impls)}.")
        return impls[impl]

    def implementations(self, name: str) -> tuple[str, ...]:
        return tuple(self._items.get(name, {}))

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def all(self) -> list[T]:
        """Every registered object, every implementation."""
        return [item for impls in self._items.values() for item in impls.values()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __len__(self) -> int:
        return len(self._items)


class ModeRegistry(Registry[NetworkMode]):
    """The mode kinds, and what the engine asks of all of them at once."""

    def link_kinds(self) -> tuple[LinkKind, ...]:
        """Every kernel link kind some mode needs, each once, in registration order."""
        seen: dict[str, LinkKind] = {}
        for mode in self.all():
            for kind in mode.link_kinds:
                seen.setdefault(kind.kind, kind)
        return tuple(seen.values())

    def reference(self) -> str:
        """The mode every other is compared with: the first registered."""
        return next(iter(self._items))


MODES = ModeRegistry("network mode", PlanError, plural="modes")
# The order of registration is the fixed order of tables, legends and colours; the first mode
# is the reference.
for _mode in (HostMode(), FlannelVxlan(), FlannelHostGw(), FlannelAwsVpc(), Ipvlan(), Macvlan(), DockerBridge(),
              CalicoRouted(), EbpfRedirect()):
    MODES.register(_mode)
# A second implementation of some modes: the pod side plumbed by the reference CNI plugins.
for _mode in (FlannelVxlanCni(), FlannelHostGwCni(), FlannelAwsVpcCni(), IpvlanCni(), MacvlanCni(), DockerBridgeCni(),
              CalicoRoutedCni()):
    MODES.register(_mode)


def get_mode(name: str, implementation: str | None = None) -> NetworkMode:
    """The mode called `name` (its `implementation`, default the project's own plan); an unknown
    name raises PlanError listing the known ones."""
    return MODES.get(name, implementation)


def mode_names() -> tuple[str, ...]:
    return MODES.names()
