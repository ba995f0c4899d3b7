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
ABI_VERSION = 2
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


_P, _I, _I64, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float

# Each exported C function once: its return type and its (name, ctype) parameters in the C
# order, as in instance_norm.cpp's extern "C" block. Pointer parameters take a tensor or None.
SIGNATURES: dict[str, tuple[type | None, tuple[tuple[str, type], ...]]] = {
    "instyle_abi_version": (_I, ()),
    "instyle_instance_norm_fwd": (_I, (
        ("dtype", _I), ("cl", _I), ("x", _P), ("r", _P), ("y", _P), ("w", _P), ("b", _P),
        ("mean", _P), ("rstd", _P), ("var", _P), ("N", _I64), ("C", _I64), ("S", _I64),
        ("stats", _I), ("eps", _F), ("relu", _I), ("nt", _I),
    )),
    "instyle_instance_norm_bwd": (_I, (
        ("dtype", _I), ("cl", _I), ("dy", _P), ("x", _P), ("y", _P), ("mean", _P), ("rstd", _P),
        ("exponent", _P), ("w", _P), ("dx", _P), ("dr", _P), ("dw", _P), ("db", _P), ("N", _I64), ("C", _I64),
        ("S", _I64), ("stats", _I), ("relu", _I), ("nt", _I),
    )),
}  # fmt: skip


def _declare(lib: ctypes.CDLL) -> None:
    for name, (restype, params) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = tuple(ctype for _, ctype in params)


# For launch(), per function: the parameter names in C order, all of them, the pointers.
_LAUNCH = {
    fn: (tuple(name for name, _ in params), frozenset(name for name, _ in params),
         tuple(name for name, ctype in params if ctype is _P))
    for fn, (_, params) in SIGNATURES.items()
}  # fmt: skip


def launch(fn_name: str, **kwargs):
    """Call ``fn_name`` of the loaded library with every argument by name (a tensor, None or an
    address for a pointer); they are put in the C order of :data:`SIGNATURES`."""
    names, name_set, pointers = _LAUNCH[fn_name]
    if kwargs.keys() != name_set:
        missing, unexpected = sorted(name_set - kwargs.keys()), sorted(kwargs.keys() - name_set)
        raise TypeError(f"{fn_name}: missing arguments {missing}, unexpected arguments {unexpected}")
    for name in pointers:
        value = kwargs[name]
        if value is not None and not isinstance(value, int):
            kwargs[name] = value.data_ptr()  # a tensor
    return getattr(load(), fn_name)(*[kwargs[name] for name in names])


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
