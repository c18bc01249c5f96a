"""Study key `variants`: every mode also run as further arms, each with settings added to the
mode's own (modes/settings.py), e.g. as on a Kubernetes node:

    variants:                              # arm "<mode>·<name>" for every mode of the study
      k8s: {node: kubernetes}
      k8s·svc: {node: kubernetes, via: service}

An arm of a variant is shuffled into each block like the others (matrix.py) and compared with the
reference by the same estimator; its records carry `arm` and `node`. Like the A/A twin
(`host·A/A`), the arm's name is the mode's with a suffix (SEP), so the mode stays readable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError

SEP = "·"
_NAME = re.compile(r"^[a-z0-9][a-z0-9·-]{0,15}$")


def parse(data: Mapping, path: Path, modes: tuple[str, ...]) -> dict[str, dict]:
    """{name: settings} of the study's `variants`, each checked as every mode's settings."""
    raw = data.get("variants") or {}
    if not isinstance(raw, dict):
        raise ConfigError(path, "variants", "must be a mapping of name: settings",
                          "Write e.g. 'k8s: {node: kubernetes}'.")
    from ..modes import mode_settings

    out = {}
    for name, settings in raw.items():
        if not isinstance(name, str) or not _NAME.match(name) or name.endswith("A/A"):
            raise ConfigError(path, f"variants.{name}", "is not a usable arm suffix",
                              "Use 1-16 lower-case letters, digits, '-' or '·', e.g. 'k8s'.")
        if not isinstance(settings, dict) or not settings:
            raise ConfigError(path, f"variants.{name}", "must be a non-empty mapping of mode settings",
                              "Write e.g. 'k8s: {node: kubernetes}'.")
        for mode in modes:
            try:
                mode_settings(mode, {**dict(data.get("mode_settings", {}).get(mode) or {}), **settings})
            except Exception as exc:  # SettingError / PlanError: one message naming the key
                raise ConfigError(path, f"variants.{name}", f"{exc} (for mode {mode})",
                                  "Use settings every mode of the study has.") from None
        out[name] = dict(settings)
    return out


def arms(study) -> tuple[tuple[str, str], ...]:
    """(arm, mode) of every variant arm, mode by mode, then the reference's A/A twin (`twin`)."""
    twin = ((study.twin_arm, study.reference),) if study.twin else ()
    return tuple((f"{m}{SEP}{v}", m) for m in study.modes for v in study.variants) + twin


def settings_of(variants: Mapping[str, dict], mode: str, arm: str | None) -> dict[str, Any]:
    """The settings an arm adds to its mode's (none for the mode's own arm or the twin)."""
    if not arm or not arm.startswith(f"{mode}{SEP}"):
        return {}
    return dict(variants.get(arm[len(mode) + len(SEP):], {}))
