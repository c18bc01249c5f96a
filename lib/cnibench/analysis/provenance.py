"""The report's provenance: hosts, tools and versions, and the manifest (report.py renders them)."""

from __future__ import annotations

import html
import json

import pandas as pd

from .dataset import Dataset


def _esc(s) -> str:
    return html.escape(str(s))


def tools(manifest: dict) -> pd.DataFrame:
    rows = []
    for name, h in (manifest.get("hosts") or {}).items():
        if not isinstance(h, dict):
            continue
        tools = h.get("tools") if isinstance(h.get("tools"), dict) else {}
        rows.append({"host": name, "kernel": h.get("kernel"), "CPU": h.get("cpu_model") or h.get("cpu"),
                     "CPUs": h.get("cpu_count"), "NIC": _short(h.get("nic")), "MTU": h.get("mtu"),
                     **{k: v for k, v in tools.items() if v}})
    if not rows and isinstance(manifest.get("tools"), dict):
        rows.append({"host": "(all)", **manifest["tools"]})
    return pd.DataFrame(rows)


def _short(v):
    if isinstance(v, dict):
        return ", ".join(f"{k} {x}" for k, x in v.items() if x)
    return v


def is_testbed(manifest: dict) -> bool | None:
    inv = manifest.get("inventory")
    if isinstance(inv, dict) and "testbed" in inv:
        return bool(inv["testbed"])
    return manifest.get("testbed")


def provenance(ds: Dataset) -> list[str]:
    m = ds.manifest
    parts = []
    parts.append("<h2 id='provenance'>Provenance</h2><ul>")
    inv = m.get("inventory")
    parts.append(f"<li>git commit: <code>{_esc(m.get('git_commit'))}</code></li>")
    parts.append(f"<li>inventory: <code>{_esc(inv.get('name') if isinstance(inv, dict) else inv)}</code></li>")
    parts.append(f"<li>study file: <code>{_esc(m.get('study_file'))}</code>, seed {_esc(m.get('seed'))}</li>")
    parts.append(f"<li>sessions: {len(m.get('sessions') or [])}; planned runs: {len(m.get('order') or [])}</li>")
    parts.append(f"<li>unreadable record files: {len(ds.unreadable)}</li></ul>")
    parts.append("<details><summary>Full manifest</summary><pre>"
                 f"{_esc(json.dumps(m, indent=1, sort_keys=True, default=str))}</pre></details>")
    return parts
