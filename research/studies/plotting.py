"""Figure helpers shared by reports, experiments and diagnostics."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
