"""metrics.jsonl: one JSON object per logged step, append-only, safe to resume.

On resume from step s the writer first drops records with step > s (they came from the part of the killed run
that the checkpoint does not hold and will be recomputed identically), so the file never holds duplicates.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def read_jsonl(path) -> list[dict]:
    """Records of a metrics file; a torn last line (killed mid-write) is ignored."""
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class MetricsWriter:
    def __init__(self, path, *, resume_step: int):
        self.path = Path(path)
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")  # noqa: SIM115  (closed in close())

    def write(self, step: int, metrics: dict) -> None:
        record = {"step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class NullWriter:
    """The metrics writer of every process but the primary one: writes nothing."""

    def write(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


def steady_throughput(path, key: str) -> float | None:
    """Median of a logged throughput over the run, leaving out the first logged window (it includes compilation)."""
    values = [r[key] for r in read_jsonl(path) if key in r]
    values = values[1:] if len(values) > 1 else values
    return float(statistics.median(values)) if values else None
