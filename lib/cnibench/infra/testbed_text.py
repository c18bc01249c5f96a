"""`invoke testbed.status`'s text (pure): what of the local testbed exists."""

from __future__ import annotations


def format_status(st: dict) -> str:
    inv = f" (inventory {st['inventory']})" if st["inventory"] else ""
    lines = [f"testbed: {'up' if st['up'] else 'down'}{inv}"]
    for h in st["hosts"]:
        lines.append(f"  {h['name']:<8} {h['role']:<7} netns={h['netns'] or '-'} ssh={h['ssh']} "
                     f"sshd={h['sshd_pid'] or '-'} data={h['data_address']} "
                     f"containers={','.join(h['containers']) or '-'}")
    if st["other_cnib_netns"]:
        lines.append("  other cnib namespaces: " + ", ".join(st["other_cnib_netns"]))
    return "\n".join(lines)
