"""A mode added through the registry's public API alone (no engine, clean, trust or hoststate
file touched) goes through plan, dry-run, up, the trust check of the hosts' copies, host-state
capture, clean and down; a second implementation of it is chosen by name. The hosts are the
stand-ins of test_modes_state (plan commands recorded, file commands run for real)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import ClassVar

import pytest
from test_modes_plans import facts
from test_modes_state import FakeFleet, FakeHost, dirs, run  # noqa: F401  (dirs: a fixture)

from cnibench.catalog import PREFIX
from cnibench.errors import PlanError
from cnibench.infra.kernelprobe import LinkKind
from cnibench.modes import MODES, ModeSettings, NetworkMode, cli, get_mode
from cnibench.modes import clean as clean_mod
from cnibench.modes.addressing import pod_to_pod_endpoint
from cnibench.modes.base import HOST_RE, SettingError, step
from cnibench.modes.engine import apply, hoststate, state
from cnibench.modes.engine.pieces import netns
from cnibench.modes.engine.trust import OUR_IF, undo_allowed
from cnibench.modes.registry import Registry

TOY = "toy-dummy"


@dataclass(frozen=True)
class ToySettings(ModeSettings):
    toy_vni: int = 7

    INT_RANGES: ClassVar = (*ModeSettings.INT_RANGES, ("toy_vni", 1, 99))


class ToyMode(NetworkMode):
    """A dummy link per host with a documentation address: an undo no shared piece plans."""

    name = TOY
    settings_type = ToySettings
    link_kinds = (LinkKind("dummy"),)
    owned_links = (rf"{PREFIX}t{HOST_RE}",)
    creates = (r"toyctl make\b",)

    def plan(self, hosts, settings):
        steps = []
        for h in hosts:
            link = f"{PREFIX}t{h.name}"
            steps += netns(h)
            steps.append(step(h.name, ["ip", "link", "add", "name", link, "type", "dummy"], ["ip", "link", "del", link]))
            addr = f"192.0.2.{settings.toy_vni}/32"
            steps.append(step(h.name, ["ip", "addr", "add", addr, "dev", link], ["ip", "addr", "del", addr, "dev", link]))
            steps.append(step(h.name, ["toyctl", "make", link]))
        return steps

    def endpoint(self, hosts, settings):
        return pod_to_pod_endpoint(self.name, hosts, settings)

    def undo_shapes(self, host, data_interface):
        return [("ip", "addr", "del", r"192\.0\.2\.\d{1,2}/32", "dev", OUR_IF)]

    def leftover_queries(self, host, data_interface):
        return {"stale": ["toyctl", "list", host]}

    def leftovers(self, host, data_interface, outputs):
        return [["toyctl", "remove", w] for w in outputs.get("stale", "").split()]

    def state_commands(self):
        return [("toy", ["toyctl", "state"])]

    def normalise_state(self, name, text):
        return re.sub(r"\d+", "N", text)


class ToyAlt(ToyMode):
    implementation = "alt"

    def plan(self, hosts, settings):
        return [step(h.name, ["toyctl", "make", f"{PREFIX}t{h.name}"]) for h in hosts]


class ToyHost(FakeHost):
    """Lists a toy link and a stale toy object (what a crash would leave)."""

    async def run(self, argv, check=True, netns=None, input=None, timeout=None):
        argv = [str(a) for a in argv]
        if argv[:3] == ["ip", "-j", "link"]:
            self.log.append((self.name, " ".join(argv)))
            links = [{"ifname": n} for n in ("lo", "eth0", f"{PREFIX}t{self.name}", f"{PREFIX}br0")]
            return _ok(self.name, argv, json.dumps(links))
        if argv[:2] == ["toyctl", "list"]:
            return _ok(self.name, argv, "stale-1\n")
        if argv[:2] == ["toyctl", "state"]:
            return _ok(self.name, argv, "toy objects: 42\n")
        return await super().run(argv, check, netns, input, timeout)


def _ok(name, argv, out):
    from cnibench.infra.hosts import CommandResult

    return CommandResult(name, tuple(argv), 0, out, "", 0.0)


@pytest.fixture
def toy(monkeypatch):
    MODES.register(ToyMode())
    MODES.register(ToyAlt())

    async def no_facts(fleet, with_router=True):
        return facts()

    monkeypatch.setattr(apply, "gather_facts", no_facts)
    yield
    MODES.unregister(TOY, "alt")
    MODES.unregister(TOY)


def fleet_of(log):
    return FakeFleet([ToyHost("client", log), ToyHost("server", log)])


def test_the_registry_refuses_unknown_names_and_double_registration():
    reg = Registry("widget", PlanError)
    reg.register(ToyMode())
    with pytest.raises(PlanError, match="Did you mean 'toy-dummy'"):
        reg.get("toy-dumy")
    with pytest.raises(PlanError, match="no implementation 'alt'"):
        reg.get(TOY, "alt")
    with pytest.raises(ValueError, match="already has"):
        reg.register(ToyMode())
    assert list(reg) == [TOY] and TOY in reg and reg[TOY].implementation == "project"


def test_a_toy_mode_plans_with_its_own_settings(toy):
    mode = get_mode(TOY)
    steps = mode.plan(facts(), mode.settings({"toy_vni": 9}))
    assert "ip addr add 192.0.2.9/32 dev cnibtclient" in [" ".join(s.argv) for s in steps]
    with pytest.raises(SettingError, match="toy_vni"):
        mode.settings({"toy_vni": 100})
    with pytest.raises(SettingError, match="not a setting of toy-dummy"):
        mode.settings({"vxlan_port": 8472})  # another kind's setting
    assert "toy_vni" not in get_mode("host").settings_type.__dataclass_fields__
    assert "dummy" in [k.kind for k in MODES.link_kinds()]


def test_dry_run_prints_the_toy_plan_and_its_cost_and_changes_nothing(toy, dirs):  # noqa: F811
    log = []
    out = json.loads(run(cli.up(fleet_of(log), TOY, None, dry_run=True, as_json=True)))
    assert out["implementation"] == "project"
    assert [s["argv"][:3] for s in out["steps"]].count(["toyctl", "make", "cnibtserver"]) == 1
    assert out["kernel_objects"] == 2 * (2 + 1 + 1)  # netns, link, address, and the kind's own pattern
    assert log == []
    alt = json.loads(run(cli.up(fleet_of(log), TOY, None, dry_run=True, as_json=True, implementation="alt")))
    assert alt["implementation"] == "alt" and len(alt["steps"]) == 2


def test_up_trust_capture_clean_and_down_ask_the_registry(toy, dirs):  # noqa: F811
    log = []
    fleet = fleet_of(log)
    run(apply.up(fleet, TOY))
    assert ("client", "ip -n cnib-client-probe link add cnibp0 type dummy") in log  # its link kind probed
    # the hosts' copies are trusted with the toy's own undo shape, and only for the toy
    state.remove_driver(fleet.inventory)
    loaded = run(state.load(fleet))
    assert loaded.problems == [] and loaded.state["mode"] == TOY and loaded.state["implementation"] == "project"
    undo = ["ip", "addr", "del", "192.0.2.7/32", "dev", "cnibtclient"]
    assert undo_allowed("client", undo, "eth0", TOY) and not undo_allowed("client", undo, "eth0", "flannel-vxlan")
    # host-state capture includes the toy's part, normalised by the toy
    snap = run(hoststate.capture_host(fleet["client"]))
    assert snap["toy"] == "toy objects: N"
    # clean: the stored plan undone, the toy's link swept by name, its leftovers removed
    log.clear()
    done = run(clean_mod.clean(fleet))
    assert ("client", "ip addr del 192.0.2.7/32 dev cnibtclient") in log
    assert ("server", "ip link del cnibtserver") in log and ("server", "toyctl remove stale-1") in log
    assert not any("cnibbr0" in c for _, c in log)  # a testbed link is never ours
    assert not any(line.startswith("problem") for line in done)
    assert run(apply.down(fleet)) is None  # clean forgot the state


def test_down_undoes_the_toy_plan_in_reverse(toy, dirs):  # noqa: F811
    log = []
    fleet = fleet_of(log)
    run(apply.up(fleet, TOY, ToySettings(toy_vni=5)))
    log.clear()
    done = run(apply.down(fleet, TOY))
    cmds = [c for h, c in log if h == "client"]
    assert cmds.index("ip addr del 192.0.2.5/32 dev cnibtclient") < cmds.index("ip link del cnibtclient") < cmds.index("ip netns del cnib-client-pod")
    assert done["mode"] == TOY
