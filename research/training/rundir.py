"""The run directory: `config.json` (checked against the config of a rerun), `command.txt`, `metrics.jsonl`,
`checkpoints/` and, written last and atomically, `summary.json`, whose presence means the run finished.

Only the primary process (process 0) writes these files; every process reads them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from research.config import Config, ConfigError, differences, from_dict, to_dict
from research.runtime.mesh import is_primary
from research.training.metrics import atomic_write_json


def prepare_workdir(config: Config, workdir: Path) -> None:
    """Create `workdir`, refuse one that holds a run of another config, and record the config and the command."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    if config_path.exists():
        previous = from_dict(Config, json.loads(config_path.read_text()))
        if previous != config:
            differ = differences(previous, config)
            raise ConfigError(
                f"{workdir} holds a run with a different config ({config_path}: {', '.join(differ[:5])} differ); "
                "use another --workdir, delete it, or pass the saved values to continue it"
            )
    if not is_primary():
        return
    atomic_write_json(config_path, to_dict(config))
    with open(workdir / "command.txt", "a") as f:
        f.write(" ".join([sys.executable, *sys.argv]) + "\n")


def write_summary(workdir: Path, summary: dict) -> None:
    """summary.json, atomically, from the primary process only."""
    if is_primary():
        atomic_write_json(workdir / "summary.json", summary)


def load_summary(workdir) -> dict | None:
    path = Path(workdir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None
