"""The on-disk cache every part shares (corpora, token streams, tokenizers, trained vectors, benchmark files):
`cache_dir()`, and `atomic_write` so that concurrent runs and test processes fill it safely."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Root of all on-disk caches: $RESEARCH_CACHE, else ~/.cache/embedding-lab."""
    return Path(os.environ.get("RESEARCH_CACHE") or Path.home() / ".cache" / "embedding-lab")


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and os.replace.

    Readers see either no file or the whole file, even with several processes writing the same entry.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a shared cache must stay readable by other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
