"""Just-in-time build of ``instance_norm.cpp`` into a shared library, cached on disk.

The kernels are plain C++ (no torch or Python headers), so one ``g++`` call builds them in
a few seconds, offline. The library lands in torch's extension cache
(``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) under a name that hashes
the source, the compiler flags, the compiler version and the CPU's feature flags, so a
changed source or a different machine sharing the cache gets its own build. Writes are
atomic (temp file + rename), so concurrent processes can race safely.

Set ``INSTYLE_CPU_NATIVE=0`` to skip the build; the backend then runs its pure-torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("instance_norm.cpp")
ABI_VERSION = 1
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17")

_lib: ctypes.CDLL | None = None
_tried = False


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _cache_dir() -> Path:
    # torch.utils.cpp_extension's location, without importing it (it pulls in setuptools)
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "torch_extensions"


def _build(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(
        "\0".join((SOURCE.read_text(), " ".join(FLAGS), version, _cpu_flags())).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"instyle_cpu_{key}" / "instance_norm.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        result = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(out)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{cxx} failed to build {SOURCE}:\n{result.stderr[-4000:]}")
        os.replace(out, target)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    p, i, i64, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
    lib.instyle_abi_version.restype = i
    lib.instyle_instance_norm_fwd.restype = i
    lib.instyle_instance_norm_fwd.argtypes = (i, i, p, p, p, p, p, p, p, p, p, i64, i64, i64, i, f, i, i)
    lib.instyle_instance_norm_bwd.restype = None
    lib.instyle_instance_norm_bwd.argtypes = (i, i, p, p, p, p, p, p, p, p, p, p, i64, i64, i64, i, i, i)


def load() -> ctypes.CDLL | None:
    """The kernel library, built on first use; None (with one warning) when it cannot be built."""
    global _lib, _tried
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("INSTYLE_CPU_NATIVE", "1") == "0":
        return None
    cxx = _compiler()
    if cxx is None:
        warnings.warn("instyle: no C++ compiler found; the cpu backend runs its slower pure-torch path", stacklevel=2)
        return None
    try:
        lib = ctypes.CDLL(str(_build(cxx)))
        _declare(lib)
        if lib.instyle_abi_version() != ABI_VERSION:
            raise RuntimeError(f"stale library (ABI {lib.instyle_abi_version()}, expected {ABI_VERSION})")
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"instyle: cpu kernels unavailable ({error}); using the pure-torch path", stacklevel=2)
        return None
    _lib = lib
    return _lib
