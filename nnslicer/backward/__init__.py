"""Backward analysis (SPEC.md section 3, Algorithm 1), over arrays.

A pure function of the lifted graph, the tape of a batch, the targets and the rule: it never
touches a Keras model, so Ray workers run it on arrays alone. Ops are visited in reverse
topological order; an op's output counts are complete when it is visited, since every consumer
comes later in topological order (fan-out counts add up).
"""

from __future__ import annotations

import numpy as np

from ..ops import Step
from ..ops.base import resolve_kernels
from .rules import BAR

__all__ = ["backward", "seed"]


def seed(graph, targets):
    """The starting table: ``CONTRIB[logits][b, o] = 1`` for each sample's target outputs."""
    counts = np.zeros((len(targets), graph.num_outputs), dtype=np.int64)
    for b, outs in enumerate(targets):
        counts[b, np.asarray(outs, dtype=np.int64)] = 1
    return counts.reshape((len(targets),) + graph.neuron_shape(graph.logits))


def backward(graph, tape, targets, rule="nnslicer", theta=0.2, propagation="code", bar=BAR, reduce=None,
             until=None, kernels=None):
    """Counts of every neuron and synapse for the samples of ``tape``.

    Parameters
    ----------
    graph : DataFlowGraph
        Its granularity says what a neuron is.
    tape : Tape
        Activations and deltas of the batch (see :func:`nnslicer.forward.forward`).
    targets : sequence of sequences of int
        For each sample, the flat indices of its output neurons ``O`` on the logits.
    rule, theta, propagation, bar
        As in SPEC.md section 3.
    reduce : None, "sum" or "abs"
        None keeps one table per sample (arrays with a leading batch axis); "sum" adds signed
        counts over samples; "abs" adds their absolute values.
    until : str, optional
        Stop once this op is done: its counts and those of every op after it in topological
        order are exact; the ops before it are left at zero (a faster partial analysis).
    kernels : None, "numba" or "numpy"
        What computes the linear ops' steps: the fused numba kernels or vectorised numpy (the
        same counts); None takes the process default (:data:`nnslicer.ops.base.KERNELS`).

    Returns
    -------
    neurons, synapses : dict of str to ndarray of int64
        Counts per tensor and per weighted op.
    """
    kernels = resolve_kernels(kernels)
    contrib = {graph.logits: seed(graph, targets)}
    synapses = {}
    for op in reversed(graph.ops):
        counts = contrib.get(op.name)
        if op.kind == "input" or counts is None or not counts.any():
            continue
        step = Step(graph, op, tape, counts, rule, theta, propagation, bar, kernels)
        inputs, syn = op.handler.backward(step)
        for name, add in zip(op.inputs, inputs):
            if name not in contrib and np.may_share_memory(add, counts):
                add = add.copy()  # a handler that hands its counts on as they are: one table per tensor
            contrib[name] = contrib[name] + add if name in contrib else add
        if syn is not None:  # a kernel shared over time steps: its counts add up
            owner = op.synapse_owner
            synapses[owner] = synapses[owner] + syn if owner in synapses else syn
        if op.name == until:
            break
    batch = len(targets)
    neurons = {op.name: contrib.get(op.name, np.zeros((batch,) + graph.neuron_shape(op.name), np.int64))
               for op in graph.ops}
    synapses = {name: synapses[name] if name in synapses else np.zeros((batch,) + graph[name].synapse_shape, np.int64)
                for name in graph.weighted_ops}
    if rule == "effective_path":  # EffectivePath's counts are 0/1 membership per sample
        neurons = {k: (v != 0).astype(np.int64) for k, v in neurons.items()}
        synapses = {k: (v != 0).astype(np.int64) for k, v in synapses.items()}
    if reduce is None:
        return neurons, synapses
    def fold(v):
        v = np.abs(v) if reduce == "abs" else v
        return v[0] if len(v) == 1 else v.sum(axis=0)

    return {k: fold(v) for k, v in neurons.items()}, {k: fold(v) for k, v in synapses.items()}
