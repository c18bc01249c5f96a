"""The registry of mode kinds: name -> NetworkMode (the kinds are imported when first asked for)."""

from __future__ import annotations

from ..catalog import MODES
from ..errors import PlanError
from .base import NetworkMode


def _registry() -> dict[str, NetworkMode]:
    from .kinds.calico import CalicoRouted
    from .kinds.docker_bridge import DockerBridge
    from .kinds.ebpf import EbpfRedirect
    from .kinds.flannel import FlannelAwsVpc, FlannelHostGw, FlannelVxlan
    from .kinds.host import HostMode
    from .kinds.ipvlan import Ipvlan
    from .kinds.macvlan import Macvlan

    modes = [HostMode(), FlannelVxlan(), FlannelHostGw(), FlannelAwsVpc(), Ipvlan(), Macvlan(), DockerBridge(), CalicoRouted(), EbpfRedirect()]
    return {m.name: m for m in modes}


def get_mode(name: str) -> NetworkMode:
    """The mode called `name`; an unknown name raises PlanError listing the known ones."""
    modes = _registry()
    if name not in modes:
        import difflib

        close = difflib.get_close_matches(str(name), MODES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise PlanError(f"unknown network mode '{name}'.{hint} Known modes: {', '.join(MODES)}.")
    return modes[name]
