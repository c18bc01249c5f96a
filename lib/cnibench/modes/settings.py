"""The settings every mode shares (ModeSettings) and their checks; a kind with knobs of its own
subclasses ModeSettings (its NetworkMode.settings_type)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields, replace
from typing import ClassVar

from ..errors import PlanError


@dataclass(frozen=True)
class ModeSettings:
    """The settings every mode shares. A kind with knobs of its own subclasses it (its
    `settings_type`), adds fields with defaults, and extends INT_RANGES and `check_kind`."""

    cluster_cidr: str = "10.244.0.0/16"
    subnet_prefix: int = 24
    service_port: int = 8080  # the port nginx listens on in the server container
    mtu: int | None = None  # override the container MTU (default: what the real solution uses)
    # `node: kubernetes` (modes/node/): kube-proxy's rules for `services` Services in its
    # `kube_proxy` mode (and flannel's masquerade for flannel), measured pod to pod or `via` the VIP.
    node: str = "bare"
    kube_proxy: str = "nftables"
    services: int = 1000
    service_cidr: str = "10.96.0.0/12"
    via: str = "pod"

    # (setting, low, high) of the whole-number settings; each reaches a command line or a
    # config file, so it must be a real int (not a string, a float or a bool) in its range.
    INT_RANGES: ClassVar[tuple[tuple[str, int, int], ...]] = (("service_port", 1, 65535), ("subnet_prefix", 1, 32),
                                                               ("services", 1, 30000))
    NETWORKS: ClassVar[tuple[str, ...]] = ("cluster_cidr", "service_cidr")  # settings that are IPv4 networks

    def __post_init__(self):
        check_settings(self)
        check_node(self)
        self.check_kind()

    def check_kind(self) -> None:
        """A kind's own checks (pure; SettingError)."""

    def with_(self, **kw) -> "ModeSettings":
        return replace(self, **kw)


def settings_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


NODE_CHOICES = (("node", ("bare", "kubernetes")), ("kube_proxy", ("nftables", "iptables")), ("via", ("pod", "service")))


def check_node(s: ModeSettings) -> None:
    """The node settings (pure): known words; a Service VIP only on a node."""
    for key, allowed in NODE_CHOICES:
        if getattr(s, key) not in allowed:
            raise SettingError(key, f"{getattr(s, key)!r} is not one of {', '.join(allowed)}",
                               f"Write e.g. '{key}: {allowed[-1]}'.")
    if s.via == "service" and s.node != "kubernetes":
        raise SettingError("via", "a Service VIP exists only on a node", "Add 'node: kubernetes', or leave 'via' out.")


class SettingError(PlanError):
    """One mode setting is wrong: names the setting, the problem and the fix."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"mode setting {key}: {problem}. {fix}")


def check_settings(s: ModeSettings) -> None:
    """Types and ranges of the shared settings and of the kind's INT_RANGES and NETWORKS (pure)."""
    for key, lo, hi in s.INT_RANGES:
        v = getattr(s, key)
        if not _whole(v) or not lo <= v <= hi:
            raise SettingError(key, f"{v!r} is not a whole number from {lo} to {hi}",
                               f"Write e.g. '{key}: {getattr(type(s), key)}'.")
    if s.mtu is not None and (not _whole(s.mtu) or not 576 <= s.mtu <= 65535):
        raise SettingError("mtu", f"{s.mtu!r} is not a whole number from 576 to 65535",
                           "Leave it out to use what the real solution uses.")
    for key in s.NETWORKS:
        v = getattr(s, key)
        try:
            if not isinstance(v, str):
                raise TypeError("not text")
            ipaddress.IPv4Network(v, strict=True)
        except (TypeError, ValueError) as exc:
            raise SettingError(key, f"{v!r} is not an IPv4 network ({exc})", "Write it like 10.244.0.0/16.") from None
