"""foreign.yaml for the deployment actually running: its ports moved to the deployment's
block, and the variants the tests need (a database crash whose standby lags)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.foreign.deployment import Layout

TARGET_FILE = Path(__file__).resolve().parent / "foreign.yaml"
WRITTEN_FOR = 18500  # the base port foreign.yaml is written for


def target_text(layout: Layout, *, crash_lag_sec: float | None = None) -> str:
    """The target file for `layout`. With `crash_lag_sec`, database-crash pauses replication
    that long before it kills the primary, so acknowledged writes are certainly lost."""
    text = re.sub(
        r"\b185(\d\d)\b", lambda m: str(layout.base_port + int(m[1])), TARGET_FILE.read_text()
    )
    if crash_lag_sec is not None:
        text = text.replace(
            "database-crash.sh inject --base-port",
            f"database-crash.sh inject --lag {crash_lag_sec:g} --base-port",
        )
    return text


def declared_faults(
    layout: Layout, *, crash_lag_sec: float | None = None
) -> dict[str, dict[str, str]]:
    """The `faults:` section, as gameday reads it."""
    loaded = yaml.safe_load(target_text(layout, crash_lag_sec=crash_lag_sec))
    return {
        name: {k: str(v) for k, v in params.items()} for name, params in loaded["faults"].items()
    }


def fault_params(
    layout: Layout, name: str, *, step: dict[str, str], crash_lag_sec: float | None = None
) -> dict[str, str]:
    """One declared fault's parameters with the step's values ({server}, {mode}) filled in,
    as the engine fills them."""
    params = declared_faults(layout, crash_lag_sec=crash_lag_sec)[name]
    return {k: v.format(**step) if k in ("inject", "heal", "check") else v
            for k, v in params.items()}  # fmt: skip
