"""research.runtime.hostmem: glibc's transparent huge pages for XLA's CPU buffers, set by re-executing the entry points."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from research.runtime import hostmem

TUNABLE = "glibc.malloc.hugetlb=1"


def _env_without_tunables() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.ENV)}


def test_environment_adds_the_tunable_once_and_keeps_the_users(monkeypatch):
    monkeypatch.setattr(hostmem, "supported", lambda: True)
    env = hostmem.environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"})
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.tcache_count=0:{TUNABLE}"
    assert hostmem.environment(env) == env
    assert hostmem.environment({})["GLIBC_TUNABLES"] == TUNABLE
    assert "GLIBC_TUNABLES" not in hostmem.environment({hostmem.ENV: "0"})  # opted out
    monkeypatch.setattr(hostmem, "supported", lambda: False)
    assert "GLIBC_TUNABLES" not in hostmem.environment({})


def test_missing_hint_only_where_huge_pages_would_help(monkeypatch):
    monkeypatch.setattr(hostmem, "supported", lambda: True)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(hostmem.ENV, raising=False)
    assert TUNABLE in hostmem.missing_hint() and "docs/running.md: Host memory" in hostmem.missing_hint()
    monkeypatch.setenv(hostmem.ENV, "0")
    assert hostmem.missing_hint() is None  # opted out
    monkeypatch.delenv(hostmem.ENV)
    monkeypatch.setenv("GLIBC_TUNABLES", TUNABLE)  # active
    assert hostmem.missing_hint() is None
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(hostmem, "supported", lambda: False)
    assert hostmem.missing_hint() is None


def test_without_huge_pages_keeps_the_other_tunables():
    assert hostmem.without_huge_pages({"GLIBC_TUNABLES": f"a=1:{TUNABLE}", "X": "y"}) == {
        "GLIBC_TUNABLES": "a=1",
        "X": "y",
    }
    assert hostmem.without_huge_pages({"GLIBC_TUNABLES": TUNABLE}) == {}


def _run(code: str, env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(not hostmem.supported(), reason="needs glibc and transparent huge pages not 'never'")
def test_reexec_starts_the_process_again_with_the_tunable_and_its_arguments():
    code = (
        "import os, sys\nfrom research.runtime import hostmem\nprint('started', flush=True)\n"
        "hostmem.reexec_with_huge_pages()\nprint(hostmem.active(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])"
    )
    out = _run(code, _env_without_tunables(), "a", "--b").splitlines()
    assert out == ["started", "started", f"True {TUNABLE} ['a', '--b']"]  # once re-executed, then not again
    opted_out = _run(code, {**_env_without_tunables(), hostmem.ENV: "0"}, "a").splitlines()
    assert opted_out == ["started", "False None ['a']"]


@pytest.mark.skipif(not hostmem.supported(), reason="needs glibc and transparent huge pages not 'never'")
def test_huge_pages_cut_the_page_faults_of_a_large_allocation():
    """The effect the module exists for: writing a new 256 MiB malloc'd buffer faults ~65,536 4 KiB pages by
    default, and a few hundred 2 MiB ones with the tunable. (Not numpy's arrays: numpy asks for huge pages itself.)"""
    code = (
        "import ctypes, resource\nlibc = ctypes.CDLL('libc.so.6')\nlibc.malloc.restype = ctypes.c_void_p\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "ctypes.memset(libc.malloc(2**28), 1, 2**28)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)"
    )
    default = int(_run(code, _env_without_tunables()))
    huge = int(_run(code, {**_env_without_tunables(), "GLIBC_TUNABLES": TUNABLE}))
    assert huge < 6_500, (default, huge)  # a tenth of the 4 KiB pages
    if hostmem._thp_mode() == "madvise":  # with "always" the kernel gives huge pages without being asked
        assert default > 60_000, (default, huge)
