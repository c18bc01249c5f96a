"""Pure parts of the workload: nginx responses and config, metrics parsing, guards, spec
validation, CPU accounting."""

from pathlib import Path

import pytest

from cnibench.errors import ConfigError
from cnibench.workload import guards, metrics, nginx
from cnibench.workload.bench import BenchSpec, HostLimits, generator_argv, load_spec, validate_spec
from cnibench.workload.generators.base import parse_accounting

FIX = Path(__file__).resolve().parents[1] / "fixtures"


# --- nginx -----------------------------------------------------------------------------------

def test_small_response_is_350_bytes_with_250_bytes_of_headers():
    assert nginx.header_bytes(100, nginx.small_pad()) == 250
    assert nginx.response_bytes("small") == 350
    # nginx 1.22 headers measured on loopback: 219 bytes + the pad's value.
    assert nginx.small_pad() == 31


def test_large_response_has_a_4096_byte_body():
    assert len(nginx.body("large")) == 4096 and len(nginx.body("small")) == 100
    assert nginx.response_bytes("large") == 4096 + nginx.header_bytes(4096, None)


def test_config_has_keepalive_without_limit_no_access_log_and_pinning():
    conf = nginx.render_config(nginx.NginxSpec(bind="10.244.1.2", port=8080, workers=2, cpus=(1,), max_connections=100))
    assert "access_log off;" in conf and "server_tokens off;" in conf and "etag off;" in conf
    assert f"keepalive_requests {nginx.KEEPALIVE_REQUESTS};" in conf
    assert "worker_processes 2;" in conf and "worker_cpu_affinity 10 10;" in conf
    assert "listen 10.244.1.2:8080 backlog=4096;" in conf
    assert f'add_header X-Pad "{"x" * 31}";' in conf
    assert "pid /run/cnibench/workload/nginx-8080/nginx.pid;" in conf.splitlines()


def test_unpinned_config_has_no_affinity():
    conf = nginx.render_config(nginx.NginxSpec(bind="198.18.0.12", port=8080, cpus=None))
    assert "worker_cpu_affinity" not in conf


def test_cpu_mask():
    assert nginx.cpu_mask(0) == "1" and nginx.cpu_mask(3) == "1000"


def test_start_failure_messages():
    s = nginx.NginxSpec(bind="198.18.0.12", port=8080)
    taken = "nginx: [emerg] bind() to 198.18.0.12:8080 failed (98: Address already in use)"
    assert "port is taken" in nginx.explain_start_failure(taken, s, "server")
    noaddr = "nginx: [emerg] bind() to 10.1.1.1:8080 failed (99: Cannot assign requested address)"
    assert "network mode" in nginx.explain_start_failure(noaddr, s, "server")
    assert "unknown directive" in nginx.explain_start_failure('nginx: [emerg] unknown directive "x"', s, "server")


def test_health_output_check():
    assert nginx.check_health_output("200 250 100", "small") is None
    assert "headers are 251" in nginx.check_health_output("200 251 100", "small")
    assert "status 404" in nginx.check_health_output("404 150 153", "small")
    assert "unexpected" in nginx.check_health_output("", "large")


# --- metrics ---------------------------------------------------------------------------------

STAT = """cpu  100 0 50 800 0 10 40 0 0 0
cpu0 60 0 30 400 0 5 20 0 0 0
cpu1 40 0 20 400 0 5 20 0 0 0
intr 12345 1 2 3
ctxt 999
btime 1
"""
NETDEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0: 1000 10 0 2 0 0 0 0 2000 20 0 3 0 0 0 0
"""
SNMP = """Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 5 6 0 0 2 100 200 7 0 1 0
"""


def test_stat_netdev_snmp_parsers():
    s = metrics.parse_stat(STAT)
    assert s["ctxt"] == 999 and s["intr"] == 12345 and s["cpus"]["cpu1"]["softirq"] == 20 and "cpu" not in s["cpus"]
    assert metrics.parse_netdev(NETDEV, "eth0") == {"rx_bytes": 1000, "rx_packets": 10, "rx_dropped": 2, "tx_bytes": 2000, "tx_packets": 20, "tx_dropped": 3}
    assert metrics.parse_netdev(NETDEV, "eth9") is None
    assert metrics.parse_snmp_tcp(SNMP)["RetransSegs"] == 7


def _sample(up, stat, netdev, snmp, container=None):
    out = f"@@sample {up}\n@@stat\n{stat}@@netdev\n{netdev}@@snmp\n{snmp}"
    if container is not None:
        out += f"@@snmp-container\n{container}"
    return out + "@@end\n"


def test_intervals_are_rates_between_samples():
    stat2 = STAT.replace("cpu1 40 0 20 400 0 5 20", "cpu1 80 0 30 420 0 15 40").replace("ctxt 999", "ctxt 1999").replace("intr 12345", "intr 13345")
    net2 = NETDEV.replace("eth0: 1000 10 0 2", "eth0: 3000 30 0 4")
    snmp2 = SNMP.replace("100 200 7", "150 300 9")
    text = _sample(10.0, STAT, NETDEV, SNMP, SNMP) + _sample(12.0, stat2, net2, snmp2, snmp2) + "@@sample 13.0\n@@stat\ncpu0 1"
    rows = metrics.intervals(text, "eth0")
    assert len(rows) == 1  # the torn third sample is dropped
    r = rows[0]
    assert r["dt"] == 2.0 and r["ctxt_per_s"] == 500.0 and r["intr_per_s"] == 500.0
    assert r["cpu"]["cpu1"] == {"user": 40.0, "system": 10.0, "irq": 10.0, "softirq": 20.0, "idle": 20.0, "steal": 0.0}
    assert r["net"]["rx_packets_per_s"] == 10.0 and r["net"]["rx_bytes_per_s"] == 1000.0 and r["net"]["rx_dropped"] == 2
    assert r["tcp_retrans"] == 2 and r["tcp_retrans_container"] == 2


def test_intervals_on_real_sampler_output():
    rows = metrics.intervals((FIX / "metrics" / "sampler-lo.txt").read_text(), "lo")
    assert len(rows) == 3  # four complete samples, a torn fifth
    for r in rows:
        assert 0.4 < r["dt"] < 1.0
        for cpu in r["cpu"].values():
            assert sum(cpu.values()) == pytest.approx(100, abs=1)
        assert r["net"] is not None and r["ctxt_per_s"] > 0


# --- guards ----------------------------------------------------------------------------------

def test_guards():
    assert guards.check(1000, 995, 10000, 0, 0, 0.5) == []
    r = guards.check(1000, 980, 10000, 0, 0, 0.5)
    assert len(r) == 1 and "98.0% of the target" in r[0]
    assert "errors" in guards.check(1000, 1000, 10000, 8, 3, 0.5)[0]
    assert guards.check(1000, 1000, 10000, 5, 5, 0.5) == []  # exactly 0.1 %
    assert "CPU" in guards.check(1000, 1000, 10000, 0, 0, 0.95)[0]
    assert guards.check(1000, 1000, 10000, 0, 0, 1.7, threads=2) == []  # 85 % per thread
    assert guards.check(None, 5.0, 100, 0, 0, 0.2) == []  # closed loop: no target
    assert guards.verdict([]) == ("ok", "")
    assert guards.verdict(["a", "b"]) == ("invalid", "invalid: a; b")


# --- spec validation -------------------------------------------------------------------------

def spec(**kw):
    base = dict(mode="host", size="small", rate=5000, duration_s=10, warmup_s=2, connections=16)
    base.update(kw)
    return BenchSpec(**base)


@pytest.mark.parametrize("kw,key,words", [
    (dict(rate=0), "rate", "must be > 0"),
    (dict(rate=-5), "rate", "must be > 0"),
    (dict(duration_s=1, warmup_s=2), "duration", "shorter than the warm-up"),
    (dict(size="medium"), "size", "not a response size"),
    (dict(generator="wrk"), "generator", "not a known generator"),
    (dict(connections=0), "connections", ">= 1"),
    (dict(threads=32), "threads", "between 1"),
    (dict(rate=1, connections=100, duration_s=10), "rate", "less than one request"),
])
def test_bad_input_is_one_clear_error(kw, key, words):
    with pytest.raises(ConfigError) as e:
        validate_spec(spec(**kw))
    assert e.value.key == key and words in str(e.value)


def test_limits_from_the_hosts():
    ok = HostLimits(nofile_client=1024, cpus_client=2, cpus_server=2, generators={"openloop": True, "h2load": True, "tcpkali": False}, curl=True)
    validate_spec(spec(), ok)
    with pytest.raises(ConfigError, match="open-file limit"):
        validate_spec(spec(connections=2000), ok)
    with pytest.raises(ConfigError, match="'tcpkali' is not installed.*openloop, h2load"):
        validate_spec(spec(generator="tcpkali"), ok)
    with pytest.raises(ConfigError, match="CPU 3 does not exist"):
        validate_spec(spec(server_cpus=(3,)), ok)
    validate_spec(spec(server_cpus=(3,), pin=False), ok)


def test_generator_is_pinned_and_accounted():
    class Ep:
        connect_address, connect_port = "198.18.0.12", 8080

    load = load_spec(spec(), Ep(), "/run/cnibench/workload/g")
    argv = generator_argv(spec(), load)
    assert argv[:3] == ["taskset", "-c", "0"]
    assert argv[3:5] == ["sh", "-c"] and argv[7] == "/run/cnibench/workload/g/cpu"
    assert "cnib-openloop" in argv[8] and load.pipeline == 313  # the default: 5000/16 per connection, 1 s deep
    assert argv[argv.index("--cpus") + 1] == "0"  # each thread pins itself
    h2 = load_spec(spec(generator="h2load"), Ep(), "/g")
    assert h2.pipeline == 1 and generator_argv(spec(generator="h2load"), h2)[8] == "h2load"
    assert generator_argv(spec(pin=False), load)[0] == "sh"


def test_default_connections_follow_the_rate():
    assert spec(connections=None, rate=25_000).n_connections == 250
    assert spec(connections=None, rate=300).n_connections == 10
    assert spec(connections=7).n_connections == 7


def test_openloop_cannot_run_closed_loop():
    with pytest.raises(ConfigError, match="open-loop only"):
        validate_spec(spec(closed_loop=True))
    with pytest.raises(ConfigError, match="arrival"):
        validate_spec(spec(arrival="bursty"))


def test_cpu_accounting_parser():
    stat = "1234 (h2 load) S 1 1234 1234 0 -1 4194560 100 2000 0 0 1 2 150 50 20 0 1 0 100 1000 100"
    # utime 1 stime 2 cutime 150 cstime 50 (ticks); 4 s of wall time at 100 ticks/s -> 0.5
    assert parse_accounting(f"100.00 104.00 100\n{stat}\n") == pytest.approx(0.5)
    assert parse_accounting("") is None
    assert parse_accounting("100 100 100\n" + stat) is None  # no wall time
