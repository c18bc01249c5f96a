"""The intended differences between a mode's `cni` and `project` implementations (pure).

`cni_differences.yml` (next to this module), written before any study compares the two, lists per
containernetworking-plugins version (the key is `cni.versions()["version"]`) and per mode:

- `host` / `pod`: each difference as a regex over one line of the unified diff of the two
  implementations' captured state (engine/hoststate: project up -> cni up), with its part and why;
- `predicted`: the sign the difference is expected to have on the measured figures
  (`latency`: "same", "higher" or "lower"; the study gate, analysis/pairs.py, allows a pair to be
  "slower" or "faster" only where this predicts that sign).

`unexplained()` returns the diff lines no entry explains. An unknown version runs the same
comparison with no entries: every difference is reported (`known: False`), not failed on.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import yaml

LIST = Path(__file__).with_name("cni_differences.yml")
SIGNS = ("same", "higher", "lower")


@lru_cache(maxsize=1)
def load(path: str = str(LIST)) -> dict:
    data = yaml.safe_load(Path(path).read_text()) or {}
    for version, modes in data.items():
        for mode, entry in (modes or {}).items():
            for side in ("host", "pod"):
                for d in entry.get(side, []):
                    re.compile(d["line"])
                    if not d.get("why"):
                        raise ValueError(f"{path}: {version}/{mode}/{side}: an entry without a 'why'")
            sign = (entry.get("predicted") or {}).get("latency", "same")
            if sign not in SIGNS:
                raise ValueError(f"{path}: {version}/{mode}: predicted latency {sign!r} is not one of {SIGNS}")
    return data


def entries(version: str | None, mode: str, data: Mapping | None = None) -> dict | None:
    """The mode's entry for the plugin version, or None when the version (or mode) is not listed."""
    data = load() if data is None else data
    return (data.get(version) or {}).get(mode)


_VOLATILE = (
    (re.compile(r"\b[0-9a-f]{1,2}(:[0-9a-f]{1,2}){5}\b"), "<mac>"),  # random MACs (bridge ids drop leading 0s)
    (re.compile(r"\bfe80::[0-9a-f:]+"), "<fe80>"),  # link-local addresses derived from them
    (re.compile(r"^\d+: "), "<n>: "),  # ifindexes
    (re.compile(r"@if\d+\b"), "@if<n>"),
    (re.compile(r"\bveth[0-9a-f]{8}\b"), "veth<8 hex>"),  # the plugins' random host-side veth names
    (re.compile(r" tentative\b"), ""),
)


def normalise(state: Mapping[str, str], renames: Mapping[str, str] | None = None) -> dict[str, str]:
    """A captured state with what differs between any two runs of one implementation left out
    (MACs, ifindexes, link-local addresses, the random veth names), each listed rename (regex ->
    text: e.g. the project's veth name -> the plugin's) applied, lines sorted (pure)."""
    subs = [*((re.compile(k), v) for k, v in (renames or {}).items()), *_VOLATILE]
    out = {}
    for part, text in state.items():
        lines = []
        for line in text.splitlines():
            for rx, sub in subs:
                line = rx.sub(sub, line)
            lines.append(line)
        out[part] = "\n".join(sorted(lines))
    return out


def changed_lines(diffs: Mapping[str, str]) -> list[tuple[str, str]]:
    """(part, line) of every added or removed line of hoststate.diff's unified diffs."""
    out = []
    for part, text in diffs.items():
        for line in text.splitlines():
            if line.startswith(("+++", "---", "@@")) or line[:1] not in ("+", "-"):
                continue
            out.append((part, line))
    return out


def unexplained(diffs: Mapping[str, str], listed: list[Mapping]) -> list[tuple[str, str]]:
    """The changed lines no listed difference (same part, regex `search`) explains."""
    pats = [(d["part"], re.compile(d["line"])) for d in listed]
    return [(part, line) for part, line in changed_lines(diffs)
            if not any(p == part and rx.search(line) for p, rx in pats)]


def compare(version: str | None, mode: str, side: str, diffs: Mapping[str, str], data: Mapping | None = None) -> dict:
    """{known, unexplained}: `known` False when the version/mode has no entry (report only)."""
    entry = entries(version, mode, data)
    listed = list((entry or {}).get(side, []))
    return {"version": version, "mode": mode, "side": side, "known": entry is not None,
            "unexplained": unexplained(diffs, listed)}


def renames(version: str | None, mode: str, data: Mapping | None = None) -> dict[str, str]:
    """The listed renames of a mode (the project's names -> the plugins'), {} when not listed."""
    return dict((entries(version, mode, data) or {}).get("renames") or {})


def predicted_sign(version: str | None, mode: str, data: Mapping | None = None) -> str | None:
    """The latency sign written for the cni-vs-project pair of `mode`, None when not listed."""
    entry = entries(version, mode, data)
    return None if entry is None else (entry.get("predicted") or {}).get("latency", "same")
