"""Native CPU kernels: C++ files compiled on first use and registered as XLA FFI custom-call targets.

A kernel is one C++ file beside the code that calls it (`research/positional/cope_cpu.cc`), written against the XLA
FFI headers that jaxlib ships (`jax.ffi.include_dir()`). `load(source, targets)` compiles it with the system's
C++ compiler for this machine's CPU (`-march=native`), caches the shared library under a key of everything the
build depends on (source, flags, compiler, jax version, CPU), loads it and registers `targets` for the CPU
platform. Every caller keeps a pure-jnp path with the same results (tested against the kernel, values and
gradients) and takes it on other platforms and whenever `load` returns False: no compiler, a failed build (logged
once, with the compiler's message), or `RESEARCH_NATIVE=0`.

Environment:
    RESEARCH_NATIVE=0        never build or use a native kernel (the jnp paths everywhere)
    RESEARCH_NATIVE_CACHE    folder for the built libraries (default: $XDG_CACHE_HOME or ~/.cache, /embedding-lab);
                             a library is loaded from it only when the folder is this user's and not writable by
                             others, and the hash its build recorded beside it matches; else it is rebuilt in a
                             private temporary folder
    CXX                      the C++ compiler (default: c++, then g++)
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-ffast-math", "-std=c++17", "-shared", "-fPIC", "-w")
"""-ffast-math lets the compiler vectorise the sigmoid's exp (glibc's vector math); the sums stay sequential."""


def enabled() -> bool:
    return os.environ.get("RESEARCH_NATIVE", "1") != "0"


def state() -> str:
    """For run records: 'on (COMPILER)', 'off: RESEARCH_NATIVE=0', 'off: no C++ compiler', or 'failed: NAMES'
    once a build in this process has failed."""
    if not enabled():
        return "off: RESEARCH_NATIVE=0"
    if _failed:
        return "failed: " + ", ".join(sorted(_failed))
    cxx = compiler()
    return f"on ({Path(cxx).name})" if cxx else "off: no C++ compiler"


_failed: set[str] = set()


def cache_folder() -> Path:
    if os.environ.get("RESEARCH_NATIVE_CACHE"):
        return Path(os.environ["RESEARCH_NATIVE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "embedding-lab" / "native"


def compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """The CPU model and feature flags (what -march=native compiles for); the machine type where unreadable."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    keep = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return platform.machine() + "\n" + "\n".join(sorted(set(keep)))


def library_path(source: Path, cxx: str) -> Path:
    """Where the library built from `source` by `cxx` for this machine lives (built or not)."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256()
    for part in (source.read_bytes(), " ".join(FLAGS), version, jax.__version__, _cpu_signature()):
        key.update(part if isinstance(part, bytes) else part.encode())
        key.update(b"\0")
    return cache_folder() / f"{source.stem}-{key.hexdigest()[:16]}.so"


def build(source: Path, cxx: str) -> Path:
    """The library built from `source`: from the cache when it is trusted and the library's recorded hash matches,
    else compiled into it (atomically: concurrent builders each write their own file and rename it, so a reader never
    sees a partial library), or into a private temporary folder when the cache folder is not trusted. Raises
    RuntimeError with the compiler's message."""
    target = library_path(source, cxx)
    if not trusted_folder(target.parent):
        private = Path(tempfile.mkdtemp(prefix="embedding-lab-native-"))  # mode 0700, ours alone
        log.warning("%s is not a private cache folder (owned by another user, or writable by others): building %s "
                    "in %s", target.parent, source.name, private)  # fmt: skip
        return _compile(source, cxx, private / target.name)
    if target.exists() and _recorded_hash(target) == _sha256(target):
        return target
    return _compile(source, cxx, target)


def _compile(source: Path, cxx: str, target: Path) -> Path:
    """Compile into `target` through a temporary file beside it, then record the library's hash beside it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        partial = Path(folder) / target.name
        command = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), str(source), "-o", str(partial)]
        log.info("building %s for this machine (once; cached as %s)", source.name, target)
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        digest = _sha256(partial)
        record = Path(folder) / "hash"
        record.write_text(digest + "\n")
        os.replace(partial, target)
        os.replace(record, _hash_path(target))
    return target


def trusted_folder(folder: Path) -> bool:
    """Whether a library in `folder` can be loaded: it is owned by this user and not writable by group or others
    (created so when missing). A shared or world-writable cache could hold a library planted by someone else."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = folder.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _hash_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _recorded_hash(library: Path) -> str | None:
    try:
        return _hash_path(library).read_text().strip()
    except OSError:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(source: Path, targets: tuple[str, ...]) -> bool:
    """Build (once per machine), load and register `targets` of `source` for the CPU platform -> whether they
    are usable. False, with one logged warning, when the build fails or no compiler is found; False without a
    word when RESEARCH_NATIVE=0 (read at every call, so it can be set after import)."""
    return enabled() and _load(source, targets)


@functools.cache
def _load(source: Path, targets: tuple[str, ...]) -> bool:
    cxx = compiler()
    if cxx is None:
        log.warning("no C++ compiler found (set CXX): %s runs on its jnp path", source.name)
        return False
    try:
        library = ctypes.cdll.LoadLibrary(str(build(source, cxx)))
        for name in targets:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as error:
        log.warning("native kernel %s unavailable, its jnp path runs instead: %s", source.name, error)
        _failed.add(source.name)
        return False
    return True


def rowwise(target: str, result_like: tuple[int, ...], rule: str, replicated: tuple[str, ...]):
    """A call of the FFI target `target` on operands whose leading axes are independent rows and whose last axes the
    kernel reads whole -> f(attributes, *operands) -> tuple of results, result i shaped like operand result_like[i].

    `attributes` is a tuple of (name, value) pairs (static). Under a jit whose operands are sharded over their
    leading axes (data parallelism), each device runs the kernel on its own rows (custom_partitioning, with the
    Shardy rule `rule`, e.g. "... t s, ... t n -> ... t s", and the factors `replicated` kept whole); without it,
    XLA would gather every operand onto every device and compute all rows everywhere."""

    def call(attributes, *operands):
        results = tuple(jax.ShapeDtypeStruct(operands[i].shape, operands[i].dtype) for i in result_like)
        return tuple(jax.ffi.ffi_call(target, results)(*operands, **dict(attributes)))

    def rows(mesh, shapes):  # the first operand's sharding of the leading axes; the last two whole
        first = shapes[0]
        spec = tuple(first.sharding.spec) + (None,) * (len(first.shape) - len(first.sharding.spec))
        return NamedSharding(mesh, PartitionSpec(*spec[:-2], None, None))

    def infer(attributes, mesh, operand_shapes, result_shapes):
        return tuple(rows(mesh, operand_shapes) for _ in result_like)

    def partition(attributes, mesh, operand_shapes, result_shapes):
        sharding = rows(mesh, operand_shapes)
        operands = tuple(sharding for _ in operand_shapes)
        return mesh, functools.partial(call, attributes), tuple(sharding for _ in result_like), operands

    partitioned = custom_partitioning(call, static_argnums=(0,))
    partitioned.def_partition(
        partition, infer_sharding_from_operands=infer, sharding_rule=rule, need_replication_factors=replicated
    )

    @functools.cache
    def batchable(attributes):  # custom_partitioning has no batching rule: under vmap the batch is more rows
        @jax.custom_batching.custom_vmap
        def run(*operands):
            return partitioned(attributes, *operands)

        @run.def_vmap
        def _(axis_size, batched, *operands):
            operands = [
                x if b else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, b in zip(operands, batched)
            ]
            return run(*operands), (True,) * len(result_like)

        return run

    return lambda attributes, *operands: batchable(attributes)(*operands)
