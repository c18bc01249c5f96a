"""`host`: the reference (Docker --net=host). No container namespace, no kernel objects:
nginx and the load generator run in the host's namespace on the data-interface address."""

from __future__ import annotations

from ..base import Check, Endpoint, HostFacts, ModeSettings, NetworkMode, Step


class HostMode(NetworkMode):
    name = "host"

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        return []

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        s = hosts.server
        return Endpoint(self.name, None, None, s.data_address, settings.service_port, s.data_address,
                        settings.service_port)

    async def path_checks(self, fleet, endpoint, settings, facts, probe):
        await probe()
        # The route to the server must be the plain data-network route on the data interface.
        c = facts.client
        r = await fleet.client.run(["ip", "-o", "route", "get", endpoint.connect_address])
        ok = f"dev {c.data_interface}" in r.stdout and " via " not in r.stdout
        return [Check("direct route on the data interface", ok, r.stdout.strip())]
