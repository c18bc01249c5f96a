"""nginx on the testbed: exact response sizes on the wire, clear start errors, bad input
refused before anything starts."""

import pytest

from cnibench.errors import ConfigError
from cnibench.workload import nginx
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import run_bench

from workload_helpers import host_endpoint, processes, raw_sizes



def test_responses_are_exactly_the_studys_sizes(with_fleet, testbed):
    ep = host_endpoint(testbed, port=8091)

    async def body(fleet):
        srv = await nginx.start(fleet.server, None, nginx.NginxSpec(bind=ep.server_bind, port=ep.server_port, cpus=(1,)))
        try:
            await nginx.health_check(fleet.client, None, f"http://{ep.connect_address}:{ep.connect_port}/small", "small")
            small = await raw_sizes(fleet.client, None, ep.connect_address, ep.connect_port, "/small")
            large = await raw_sizes(fleet.client, None, ep.connect_address, ep.connect_port, "/large")
            affinity = (await fleet.server.run(["taskset", "-p", str(srv.worker_pids[0])])).stdout
            return small, large, affinity, await srv.alive()
        finally:
            await srv.stop()

    small, large, affinity, alive = with_fleet(body)
    assert small == (250, 100, 350)
    assert large[1] == 4096 and large[2] == nginx.response_bytes("large")
    assert affinity.strip().endswith(": 2")  # mask 0x2: the worker is on CPU 1
    assert alive


def test_port_taken_is_a_clear_error_and_leaves_nothing(with_fleet, testbed):
    ep = host_endpoint(testbed, port=8092)

    async def body(fleet):
        spec = nginx.NginxSpec(bind=ep.server_bind, port=ep.server_port)
        first = await nginx.start(fleet.server, None, spec)
        try:
            second = nginx.NginxSpec(bind=ep.server_bind, port=ep.server_port, run_dir=spec.dir + "-second")
            with pytest.raises(nginx.NginxError) as e:
                await nginx.start(fleet.server, None, second)
            left = (await fleet.server.run(["test", "-e", second.dir], check=False)).exit_status
            return str(e.value), left
        finally:
            await first.stop()

    message, left = with_fleet(body)
    assert "port is taken" in message and "8092" in message
    assert left != 0  # the failed start removed its files


@pytest.mark.parametrize("kw,words", [
    (dict(rate=0), "must be > 0"),
    (dict(duration_s=1, warmup_s=3), "shorter than the warm-up"),
    (dict(generator="nope"), "not a known generator"),
    # under the local-port bound (28,232), over the testbed's open-file limit (20,000 here)
    (dict(rate=2_000_000, connections=25_000), "open files; the hard limit is"),
    (dict(rate=2_000_000, connections=1_000_000), "ip_local_port_range"),
])
def test_bad_input_fails_before_anything_starts(with_fleet, testbed, kw, words):
    ep = host_endpoint(testbed, port=8093)
    base = dict(mode="host", size="small", rate=1000, duration_s=3, warmup_s=1, connections=8)
    base.update(kw)

    async def body(fleet):
        with pytest.raises(ConfigError) as e:
            await run_bench(fleet, ep, BenchSpec(**base), run_id="test/host/small/1/rep1")
        return str(e.value), await processes(fleet.server, "nginx-8093")

    message, nginx_left = with_fleet(body)
    assert words in message and nginx_left == []


def test_missing_generator_is_named(with_fleet, testbed):
    ep = host_endpoint(testbed, port=8093)

    async def body(fleet):
        from cnibench.workload.generators import available
        have = await available(fleet.client)
        if have["tcpkali"]:
            pytest.skip("tcpkali is installed here; the missing-generator path cannot be shown")
        with pytest.raises(ConfigError) as e:
            await run_bench(fleet, ep, BenchSpec(mode="host", size="small", rate=1000, duration_s=3, warmup_s=1,
                                                 connections=8, generator="tcpkali"), run_id="t/host/small/1/rep1")
        return str(e.value)

    assert "'tcpkali' is not installed on the client host" in with_fleet(body)
