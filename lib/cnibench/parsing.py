"""Pure parsers for tool output shared by every stage (no imports from the package)."""

import json
import re
from typing import Any

_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)?(?:[-.\w]*)?)")


def ip_json(stdout: str | None) -> list[Any]:
    """`ip -j ...` output as a list (empty output, as for no match, is an empty list)."""
    return json.loads(stdout or "[]")


def version(text: str | None, tool: str = "") -> str | None:
    """The version in a tool's --version banner ('nginx/1.22.1' -> 1.22.1; `ip`: iproute2-x)."""
    text = text or ""
    if tool == "ip":
        m = re.search(r"iproute2-([\w.]+)", text)
        if m:
            return m.group(1)
    m = _VERSION_RE.search(text)
    return m.group(1) if m else None
