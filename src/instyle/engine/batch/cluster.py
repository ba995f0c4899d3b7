"""The Ray cluster of a batch job: connecting to it within a bounded time, and what each stage asks
of it (actors per GPU, or CPUs shared between actors and the decoding tasks)."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any

from instyle.engine.config import ConfigError

__all__ = ["ClusterError", "PROBE_SECONDS", "READY_SECONDS", "Resources", "blocks_for", "connect", "plan_resources", "probe_address"]

READY_SECONDS = 600.0  # how long the model check may take to start and load (weights fetched on a new node)
MAX_BLOCKS = 20_000  # blocks of the list of images, at most (the driver keeps a reference to each)
PROBE_SECONDS = 5.0  # how long an address may take to answer before the job gives up on it
# The HTTP/2 connection preface and an empty SETTINGS frame: a Ray head (gRPC) answers with its own
# SETTINGS frame; anything else (another server, a firewall that accepts and says nothing) does not.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


class ClusterError(ConfigError):
    """A cluster that cannot be reached or used; ``field`` is ``address`` (or the option at fault)."""


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``ray://host:port``: Ray Client, port 10001 by default) of a Ray address."""
    from ray._private.services import canonicalize_bootstrap_address

    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].partition(":")
        return host, int(port or 10001)
    try:
        canonical = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as error:
        raise ClusterError("address", f"{address}: {error}") from error
    if canonical is None:
        raise ClusterError("address", f"{address}: no running Ray cluster found")
    host, _, port = canonical.rpartition(":")
    return host.strip("[]"), int(port)


def probe_address(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Check within ``timeout`` seconds that a Ray head answers at ``address`` (``ray.init`` itself
    retries a silent address for many minutes). ClusterError naming ``address`` says why not."""
    try:
        host, port = _host_port(address)
    except ValueError as error:
        raise ClusterError("address", f"{address}: not an address of the form HOST:PORT ({error})") from error
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            if os.environ.get("RAY_USE_TLS", "0") not in ("0", "", "false"):
                return  # a TLS head cannot be asked in plain HTTP/2; its port answered
            conn.settimeout(timeout)
            conn.sendall(_H2_PREFACE)
            head = _read(conn, 9)
    except socket.timeout:
        raise ClusterError("address", f"{address}: no answer within {timeout:g} s; is the Ray head running there?") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ClusterError("address", f"{address}: cannot connect ({reason}); is the Ray head running there?") from None
    if len(head) < 9 or head[3] != _SETTINGS:
        raise ClusterError("address", f"{address}: the server there is not a Ray head (it does not speak gRPC)")


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def connect(address: str | None, init_options: dict[str, Any] | None = None) -> bool:
    """Connect this process to Ray: an existing connection is kept; ``address`` (or $RAY_ADDRESS) is
    probed first (:func:`probe_address`); with neither, a local cluster starts (``init_options``:
    ``ray.init``'s, e.g. ``num_cpus``). Returns whether this call connected (and so should shut down).
    Without Ray installed, an ImportError says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError("instyle's Ray engine needs Ray: pip install 'instyle[ray]'") from error

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "local"):
        probe_address(address)
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR", **(init_options or {})}
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or "a local cluster"
        raise ClusterError("address", f"{where}: Ray could not connect ({_first_line(error)})") from error
    return True


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


@dataclass(frozen=True)
class Resources:
    """What the job asks of the cluster: ``actors`` stylizing actors, each with ``actor_gpus`` GPUs
    and ``actor_cpus`` CPUs (torch's threads: ``threads``), and decoding tasks of ``read_cpus``
    CPUs, at most ``readers`` at once (None: as many as the cluster fits)."""

    actors: int
    actor_cpus: float
    actor_gpus: float
    threads: int | None
    read_cpus: float
    readers: int | None

    @property
    def actor_options(self) -> dict[str, float]:
        return {"num_cpus": self.actor_cpus, **({"num_gpus": self.actor_gpus} if self.actor_gpus else {})}


def plan_resources(cluster: dict[str, float], device: str, actors: int | None, actors_per_gpu: int) -> Resources:
    """The resources of a job on a cluster of ``cluster`` (``ray.cluster_resources()``).

    With GPUs (and ``device`` not the CPU): ``actors_per_gpu`` actors share each GPU (default pool:
    all of them), one CPU each for its host-side work, and decoding tasks take one CPU each from
    the rest. On CPUs only: the CPUs are split between the actors (default: one actor per CPU, one
    torch thread each: on small images processes scale better than threads), and decoding tasks
    ask for no CPU slot, so that the pool, which takes every CPU, never starves its own input;
    at most one decoding task per actor runs at once (decoding is a few percent of the work)."""
    for name, value, low in (("actors", actors, 1), ("actors_per_gpu", actors_per_gpu, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ClusterError(name, f"must be an integer >= {low}, got {value!r}")
    gpus, cpus = int(cluster.get("GPU", 0)), max(1, int(cluster.get("CPU", 1)))
    if gpus and not device.startswith(("cpu", "mps")):
        count = actors or gpus * actors_per_gpu
        return Resources(count, 1.0, 1.0 / actors_per_gpu, None, 1.0, None)
    count = actors or cpus
    share = max(1, cpus // count)  # each actor's CPUs; more actors than CPUs share them
    return Resources(count, float(share) if count <= cpus else cpus / count, 0.0, share, 0.0, count)


def blocks_for(images: int, batch_size: int) -> int:
    """How many blocks the list of images is cut into: one batch each (one decoding task each, whose
    batch then goes to one actor call, so that rows come back batch by batch), and at most
    :data:`MAX_BLOCKS` (a job of millions: blocks of several batches, rows a few batches at a time)."""
    return max(1, min(math.ceil(images / batch_size), MAX_BLOCKS))
