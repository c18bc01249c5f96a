"""Inventory validation: every bad inventory gets one clear message naming file, key and fix."""

from pathlib import Path

import pytest
import yaml

from cnibench.infra.config import load_inventory, parse_inventory
from cnibench.errors import ConfigError


def host(**kw):
    base = {"name": "client", "address": "198.18.0.11", "role": "client", "data_interface": "eth0"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


SERVER = {"name": "server", "address": "198.18.0.12", "role": "server", "data_interface": "eth0"}


def good(**kw):
    return {"hosts": [host(**kw), dict(SERVER)]}


def test_valid_inventory_is_typed(tmp_path):
    key = tmp_path / "id"
    key.write_text("x")
    key.chmod(0o600)
    inv = parse_inventory(good(key_file=str(key), port=2222), tmp_path / "inv.yml")
    assert inv.client.name == "client" and inv.server.name == "server"
    assert inv.client.port == 2222 and inv.client.key_file == str(key)
    assert inv.client.host_key_policy == "verify"  # verified unless said otherwise


def test_relative_key_file_resolves_next_to_inventory(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text("x")
    (tmp_path / "keys" / "id").chmod(0o600)
    inv = parse_inventory(good(key_file="keys/id"), tmp_path / "inv.yml")
    assert inv.client.key_file == str(tmp_path / "keys" / "id")


BAD = [
    ("not a mapping", ["a", "b"], "(top level)", "mapping"),
    ("no hosts", {"name": "x"}, "hosts", "non-empty list"),
    ("unknown top key", {"hostz": [], "hosts": [host(), SERVER]}, "hostz", "did you mean 'hosts'"),
    ("unknown host key", good(adress="x"), "hosts[0].adress", "did you mean 'address'"),
    ("missing address", good(address=None), "hosts[0].address", "is missing"),
    ("missing data_interface", good(data_interface=None), "hosts[0].data_interface", "is missing"),
    ("bad role", good(role="clinet"), "hosts[0].role", "did you mean 'client'"),
    ("no server", {"hosts": [host()]}, "hosts", "no host has role 'server'"),
    ("bad port", good(port=70000), "hosts[0].port", "not a TCP port"),
    ("port as string", good(port="22"), "hosts[0].port", "not a TCP port"),
    ("long interface", good(data_interface="a-very-long-ifname0"), "hosts[0].data_interface", "not a valid interface name"),
    ("bad host name", good(name="Client-1"), "hosts[0].name", "not a valid host name"),
    ("duplicate name", {"hosts": [host(), dict(SERVER, name="client")]}, "hosts", "appears twice"),
    ("bad policy", good(host_key_policy="ignore"), "hosts[0].host_key_policy", "not a policy"),
    ("missing key file", good(key_file="/nonexistent/id"), "hosts[0].key_file", "does not exist"),
    ("agent not bool", good(agent="yes"), "hosts[0].agent", "not true or false"),
    ("bad data address", good(data_address="300.1.1.1"), "hosts[0].data_address", "not an IPv4 address"),
    ("missing known_hosts", good(known_hosts="/nonexistent/kh"), "hosts[0].known_hosts", "does not exist"),
    ("same ssh endpoint", {"hosts": [host(), dict(SERVER, address="198.18.0.11")]}, "hosts", "same SSH address"),
    ("name with a path", {"name": "../../etc", "hosts": [host(), SERVER]}, "name", "not a usable inventory name"),
    ("name with a slash", {"name": "a/b", "hosts": [host(), SERVER]}, "name", "not a usable inventory name"),
]


@pytest.mark.parametrize("label,doc,key,words", BAD, ids=[b[0] for b in BAD])
def test_bad_inventory_message(tmp_path, label, doc, key, words):
    path = tmp_path / "bad.yml"
    with pytest.raises(ConfigError) as err:
        parse_inventory(doc, path)
    msg = str(err.value)
    assert msg.startswith(str(path)), msg  # names the file
    assert err.value.key == key, msg  # names the key
    assert words in msg, msg  # says what is wrong
    assert err.value.fix and err.value.fix in msg  # says how to fix it


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("hosts:\n  - name: client\n    address: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_inventory(path)
    assert "line" in err.value.key and "not valid YAML" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_inventory(tmp_path / "nope.yml")


def test_testbed_marker_when_down_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("CNIBENCH_RUN_DIR", str(tmp_path / "run"))
    import importlib

    import cnibench.infra.config as config
    import cnibench.infra.testbed as testbed

    importlib.reload(config)
    importlib.reload(testbed)
    try:
        marker = tmp_path / "testbed.yml"
        marker.write_text(yaml.safe_dump({"testbed": {"hosts": ["client", "server"]}}))
        with pytest.raises(ConfigError, match="invoke testbed.up"):
            config.load_inventory(marker)
    finally:
        monkeypatch.delenv("CNIBENCH_RUN_DIR")
        importlib.reload(config)
        importlib.reload(testbed)


def test_example_inventories_parse_apart_from_keys():
    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "inventories" / "two-hosts.example.yml").read_text())
    for h in doc["hosts"]:
        h.pop("key_file", None)
    inv = parse_inventory(doc, "two-hosts.example.yml")
    assert [h.role for h in inv.hosts] == ["client", "server"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_others_can_read_is_refused(tmp_path, mode):
    key = tmp_path / "id"
    key.write_text("x")
    key.chmod(mode)
    with pytest.raises(ConfigError) as err:
        parse_inventory(good(key_file=str(key)), tmp_path / "inv.yml")
    assert err.value.key == "hosts[0].key_file" and f"{mode:04o}" in str(err.value) and "chmod 600" in str(err.value)


def test_ssh_options_ignore_ssh_config_and_never_forward_the_agent(tmp_path):
    from cnibench.infra.hosts import Host

    inv = parse_inventory(good(), tmp_path / "inv.yml")
    opts = Host(inv.client)._connect_options()
    assert opts["config"] is None and opts["agent_forwarding"] is False
    assert opts["agent_path"] is None  # agent: false (default): the agent is not used at all
    with_agent = parse_inventory(good(agent=True), tmp_path / "inv.yml")
    opts = Host(with_agent.client)._connect_options()
    assert "agent_path" not in opts and opts["agent_forwarding"] is False  # used to log in, never forwarded

