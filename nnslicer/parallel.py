"""Serial or Ray execution of the backward analysis over chunks of samples, same results.

The lifted graph goes to Ray's object store once; each chunk's tape goes once, as its task's
argument. Tasks are retried when a worker dies or a task fails (``max_retries``), and results
are put back by chunk index, so no sample is lost or counted twice and the order is the
input's. Ray is started only when asked for (``n_jobs > 1`` or an address), never at import:
an ``address`` (or ``RAY_ADDRESS``) joins an existing cluster. What Ray would report as a
traceback or retry for minutes (an address it cannot parse, nothing listening, a refused
token, a worker or node lost beyond the retries) is raised as one nnslicer error saying what
to do.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections import deque

from .backward import backward
from .errors import ExecutionError, InvalidParameterError, require

__all__ = ["map_backward", "use_ray"]

log = logging.getLogger(__name__)

#: Retries of a task whose worker died or that raised.
MAX_RETRIES = 3

#: ``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT`` (Ray Client).
_ADDRESS = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})")

#: Said of an address that comes from the environment.
_FROM_ENV = " (from the RAY_ADDRESS environment variable)"


def use_ray(n_jobs, address):
    """Whether these settings ask for Ray; a bad ``n_jobs`` or address is refused here, before
    any work."""
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1):
        raise InvalidParameterError(f"The 'n_jobs' parameter must be None or a positive int. Got {n_jobs!r} instead.")
    return (n_jobs is not None and n_jobs > 1) or _cluster(n_jobs, address) is not None


def _cluster(n_jobs, address):
    """``(address, source)`` of the cluster to join (``source`` names RAY_ADDRESS when the
    address comes from it), or None; refuses an address that Ray cannot parse."""
    source = ""
    if not address and n_jobs != 1:
        address, source = os.environ.get("RAY_ADDRESS"), _FROM_ENV
    if not address:
        return None
    if not isinstance(address, str) or (address not in ("auto", "local") and _host_port(address) is None):
        what = "The RAY_ADDRESS environment variable" if source else "The 'address' parameter"
        raise InvalidParameterError(f"{what} must be a Ray cluster's HOST:PORT (as 'ray start --head' prints it), "
                                    f"'auto' or 'ray://HOST:PORT'. Got {address!r} instead.")
    return address, source


def _host_port(address):
    """``(host, port)`` of a ``[ray://]HOST:PORT`` address, else None."""
    found = _ADDRESS.fullmatch(address)
    if found is None or not 0 < int(found[2]) < 65536:
        return None
    return found[1].strip("[]"), int(found[2])


def _check_reachable(host_port, address, source, timeout=5.0):
    """Refuse at once an address where nothing listens (Ray itself would retry for minutes)."""
    try:
        socket.create_connection(host_port, timeout=timeout).close()
    except OSError as exc:
        raise InvalidParameterError(_unreachable(address, source, exc)) from None


def _unreachable(address, source, reason):
    leave = "unset RAY_ADDRESS" if source else "leave the address out"
    return (f"No Ray cluster answers at {address!r}{source} ({reason}). Start one with 'ray start --head', "
            f"or {leave} to start Ray here.")


def _check_gcs(ray, address, source):
    """One handshake with the cluster's GCS, where ``ray.init`` would retry a refused token
    for 20 s (and a port where something else listens for minutes)."""
    try:  # not public: without them, Ray's own retries remain
        from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
        from ray._raylet import GcsClient
    except ImportError:  # pragma: no cover - depends on Ray's version
        return
    try:
        ensure_token_if_auth_enabled(None, create_token_if_missing=False)  # else GcsClient aborts the process
        GcsClient(address=address)
    except ray.exceptions.AuthenticationError as exc:
        raise InvalidParameterError(
            f"Ray's token authentication failed with the cluster at {address!r}{source} ({exc.message}). Set "
            "RAY_AUTH_MODE=token and the cluster's token ('ray get-auth-token' on its head prints it) in "
            "RAY_AUTH_TOKEN or ~/.ray/auth_token, in the environment before this process starts; or start the "
            "cluster with RAY_AUTH_MODE=disabled.") from None
    except ray.exceptions.RpcError as exc:
        raise InvalidParameterError(_unreachable(address, source, exc)) from None


def _init_ray(n_jobs, cluster):
    ray = require("ray", "ray")
    if ray.is_initialized():
        return ray
    if cluster is None:
        ray.init(num_cpus=n_jobs, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}})
        return ray
    address, source = cluster
    host_port = _host_port(address)
    if host_port:  # "auto" and "local" are left to Ray
        _check_reachable(host_port, address, source)
        if not address.startswith("ray://"):  # a Ray Client server is no GCS
            _check_gcs(ray, address, source)
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    return ray


def _failure(exc):
    """The nnslicer error for Ray's failure ``exc``: a worker or node lost beyond the retries."""
    reason = (str(exc).strip().splitlines() or [""])[0]
    return ExecutionError(f"Ray failed during the backward analysis after up to {MAX_RETRIES} retries of a task: "
                         f"{type(exc).__name__}: {reason} Look at the cluster's memory and logs ('ray status'; "
                         "/tmp/ray/session_latest/logs on its nodes), or run serially with n_jobs=1 (--workers 1).")


def _task(graph, tape, targets, params, reduce):
    return backward(graph, tape, targets, reduce=reduce, **params)


_remote_cache = {}


def _remote(ray):
    fn = _remote_cache.get(id(ray))
    if fn is None:
        fn = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=True)(_task)
        _remote_cache[id(ray)] = fn
    return fn


def map_backward(graph, chunks, params, reduce=None, n_jobs=None, address=None, progress=None):
    """Backward analysis of every chunk; yields ``(neurons, synapses, targets)`` in order.

    Parameters
    ----------
    graph : DataFlowGraph
    chunks : iterable of (Tape, targets)
        Produced lazily (the forward analysis of the next chunk overlaps the workers' work).
    params : dict
        ``rule``, ``theta``, ``propagation`` (and ``bar``) for :func:`backward`.
    reduce : None, "sum" or "abs"
    n_jobs : int, optional
        Ray workers for a local runtime; None or 1 runs serially in this process.
    address : str, optional
        A Ray cluster to run on (``ray start --head`` prints it); also read from ``RAY_ADDRESS``.
    progress : callable, optional
        Called with the number of samples done after each chunk.
    """
    if not use_ray(n_jobs, address):
        yield from _serial(graph, chunks, params, reduce, progress)
        return
    ray = _init_ray(n_jobs, _cluster(n_jobs, address))
    try:
        yield from _on_ray(ray, graph, chunks, params, reduce, n_jobs, progress)
    except ray.exceptions.RayTaskError:  # the analysis itself raised: as it is
        raise
    except ray.exceptions.RayError as exc:  # workers, nodes, the object store
        raise _failure(exc) from exc


def _serial(graph, chunks, params, reduce, progress):
    done = 0
    for tape, targets in chunks:
        neurons, synapses = backward(graph, tape, targets, reduce=reduce, **params)
        done += len(targets)
        if progress:
            progress(done)
        yield neurons, synapses, targets


def _on_ray(ray, graph, chunks, params, reduce, n_jobs, progress):
    remote = _remote(ray)
    graph_ref = ray.put(graph)
    width = 2 * max(1, n_jobs or int(ray.available_resources().get("CPU", 1)))
    log.info("backward analysis on Ray (%s CPUs, up to %d tasks in flight)",
             ray.available_resources().get("CPU", "?"), width)
    pending = deque()
    done = 0

    def finish():
        nonlocal done
        ref, targets = pending.popleft()
        neurons, synapses = ray.get(ref)
        done += len(targets)
        if progress:
            progress(done)
        return neurons, synapses, targets

    for tape, targets in chunks:
        pending.append((remote.remote(graph_ref, tape, targets, params, reduce), targets))
        while len(pending) >= width:
            yield finish()
    while pending:
        yield finish()
