"""Serial or Ray execution of the backward analysis over chunks of samples, same results.

The lifted graph goes to Ray's object store once; each chunk's tape goes once, as its task's
argument. Tasks are retried when a worker dies or a task fails (``max_retries``), and results
are put back by chunk index, so no sample is lost or counted twice and the order is the
input's. Ray is started only when asked for (``n_jobs > 1`` or an address), never at import:
an ``address`` (or ``RAY_ADDRESS``) joins an existing cluster.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque

from .backward import backward
from .errors import InvalidParameterError, require

__all__ = ["map_backward", "use_ray"]

log = logging.getLogger(__name__)

#: Retries of a task whose worker died or that raised.
MAX_RETRIES = 3


def use_ray(n_jobs, address):
    """Whether these settings ask for Ray."""
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1):
        raise InvalidParameterError(f"The 'n_jobs' parameter must be None or a positive int. Got {n_jobs!r} instead.")
    return (n_jobs is not None and n_jobs > 1) or bool(address) or bool(os.environ.get("RAY_ADDRESS") and n_jobs != 1)


def _check_reachable(address, source="", timeout=5.0):
    """Refuse at once a ``host:port`` address where nothing listens (Ray itself would retry
    for minutes); ``auto`` and other forms are left to Ray."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        leave = "unset RAY_ADDRESS" if source else "leave the address out"
        raise InvalidParameterError(f"No Ray cluster answers at {address!r}{source} ({exc}). Start one with "
                                    f"'ray start --head', or {leave} to start Ray here.") from None


def _init_ray(n_jobs, address):
    ray = require("ray", "ray")
    if not ray.is_initialized():
        source = "" if address else " (from the RAY_ADDRESS environment variable)"
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            _check_reachable(address, source)
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(num_cpus=n_jobs, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}})
    return ray


def _task(graph, tape, targets, params, reduce):
    _fault_injection()
    return backward(graph, tape, targets, reduce=reduce, **params)


def _fault_injection():
    """For the tests of retries: with ``NNSLICER_FAULT_ONCE=PATH`` in the workers' environment,
    the first task to create PATH kills its worker (as a crash would)."""
    marker = os.environ.get("NNSLICER_FAULT_ONCE")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)


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
    done = 0
    if not use_ray(n_jobs, address):
        for tape, targets in chunks:
            neurons, synapses = backward(graph, tape, targets, reduce=reduce, **params)
            done += len(targets)
            if progress:
                progress(done)
            yield neurons, synapses, targets
        return
    ray = _init_ray(n_jobs, address)
    remote = _remote(ray)
    graph_ref = ray.put(graph)
    width = 2 * max(1, n_jobs or int(ray.available_resources().get("CPU", 1)))
    log.info("backward analysis on Ray (%s CPUs, up to %d tasks in flight)",
             ray.available_resources().get("CPU", "?"), width)
    pending = deque()

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
