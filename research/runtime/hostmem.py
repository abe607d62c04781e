"""Transparent huge pages for host memory, so that a CPU training step does not fault its buffers in 4 KiB at a time.

On CPU, XLA allocates a step's temporaries (about 700 MB for the reference config of `research.bench.steps`) with the C
library's malloc and frees them when the step ends. glibc serves an allocation too big for a thread's arena with a
fresh `mmap` and unmaps it on `free`, so every step touched ~175,000 new 4 KiB pages: a page fault and a zeroing by
the kernel each, about 15% of the reference step on a 2-core machine (counted with `resource.getrusage().ru_minflt`
around a step; PyTorch's CPU allocator pays the same).

glibc's tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) makes malloc mark those mappings for transparent huge
pages: 2 MiB pages, ~250 times fewer faults. The reference step then takes 0.87-0.89 of its time (nope and rope,
three alternating processes each), and compiling is unchanged.
(Keeping freed memory instead, with `mallopt` limiting malloc to one arena, removes the faults too, but compiling
takes ~40% longer.) It takes effect only when the process starts, so the
training entry points (`scripts/train.py`, `sweep.py`, `bench.py`, `train_vectors.py`) re-execute themselves once
with it set (`reexec_with_huge_pages`; the test suite, bound by compiling, ran no faster with it, so `make test`
does not). Set RESEARCH_HUGE_PAGES=0 to keep the defaults.
It does nothing where the kernel's transparent huge pages are off ("never") or the C library is not glibc.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ENV = "RESEARCH_HUGE_PAGES"
TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str:
    """The kernel's transparent-huge-page mode ("always", "madvise" or "never"); "" where there is none."""
    try:
        text = THP_MODE.read_text()
    except OSError:
        return ""
    return text[text.find("[") + 1 : text.find("]")] if "[" in text else ""


def supported() -> bool:
    """Whether the tunable can help here: glibc, and transparent huge pages not off."""
    return platform.libc_ver()[0] == "glibc" and _thp_mode() in ("always", "madvise")


def _tunables(env) -> list[str]:
    return [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]


def active() -> bool:
    """Whether this process started with the tunable set (glibc reads it only at start) on a system it helps."""
    return TUNABLE in _tunables(os.environ) and supported()


def _wanted(env) -> bool:
    """Whether `env` lacks the tunable where it would help, and is not opted out (ENV=0)."""
    return env.get(ENV, "1") != "0" and supported() and TUNABLE not in _tunables(env)


def missing_hint() -> str | None:
    """A one-line hint for a run in a process that started without the tunable where it would help (a notebook, or
    `python -c`); None when it is active, unsupported or opted out. The caller logs it on CPU only."""
    if not _wanted(os.environ):
        return None
    return (
        "host buffers without huge pages: XLA's CPU step faults its temporaries in 4 KiB at a time (~12% of the "
        f"reference step); start Python with GLIBC_TUNABLES={TUNABLE}, as scripts/train.py does (docs/running.md: Host "
        f"memory; {ENV}=0 silences this)"
    )


def environment(env: dict | None = None) -> dict:
    """`env` (default os.environ) with the tunable added to GLIBC_TUNABLES, unless opted out or unsupported."""
    env = dict(os.environ if env is None else env)
    if _wanted(env):
        env["GLIBC_TUNABLES"] = ":".join([*_tunables(env), TUNABLE])
    return env


def without_huge_pages(env: dict | None = None) -> dict:
    """`env` (default os.environ) with the tunable taken out of GLIBC_TUNABLES: the C library's default, for a child
    process that should run as it would outside this framework (the benchmark's PyTorch peer)."""
    env = dict(os.environ if env is None else env)
    rest = [t for t in _tunables(env) if t != TUNABLE]
    env.pop("GLIBC_TUNABLES", None)
    return env | ({"GLIBC_TUNABLES": ":".join(rest)} if rest else {})


def reexec_with_huge_pages() -> None:
    """Re-execute this Python process with the tunable set, once; a no-op when it is set, opted out or unsupported.
    Call it first thing in a script's `__main__` block, before any work (it replaces the process)."""
    if _wanted(os.environ):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environment())
