"""The Slicer facade: ``fit`` (lift + profile), ``slice`` and ``slice_many``."""

from __future__ import annotations

import logging
import numbers
import time
import warnings

import numpy as np

from .backward.rules import DEFAULT_THETA, check_rule
from .errors import InvalidInputError, InvalidParameterError, NotFittedError, UnsupportedLayerError
from .forward import as_batch, forward
from .frontends import frontend_of
from .graph import has_channels
from .ops.base import resolve_kernels
from .parallel import map_backward, use_ray
from .profiling import Profile, first_batch
from .profiling import profile as make_profile
from .slice import Slice
from .validation import Interval, Options, check_params

log = logging.getLogger(__name__)

__all__ = ["Slicer"]

#: Memory that one chunk of samples may use for its tape and counts during slicing.
CHUNK_BYTES = 128 << 20


def _accumulate(total, part):
    """``total[k] += part[k]`` for every array, in place where ``total[k]`` is writable."""
    for k, v in part.items():
        if total[k].flags.writeable:
            total[k] += v
        else:
            total[k] = total[k] + v


#: The Slicer's parameters that a table checks (``rule`` and ``theta`` go together: see
#: :func:`nnslicer.backward.rules.check_rule`).
PARAMETERS = {
    "granularity": [Options(("element", "channel"))],
    "baseline": [Options(("global", "class"))],
    "propagation": [Options(("code", "paper"))],
    "batch_size": [Interval(int, 1)],
    "aggregate": [Options(("sum", "abs"))],
}


class Slicer:
    """Slices a Keras model: which neurons and synapses made an output.

    Parameters
    ----------
    model : keras.Model
        A Sequential or functional model with one input and one output.
    theta : float in (0, 1), optional
        Share of a neuron's contribution that may be left out. Default 0.2 (0.5 for
        ``rule="effective_path"``).
    rule : {"nnslicer", "paper", "effective_path"}
        Which candidates are kept (SPEC.md section 3): the authors' code, the paper's text, or
        EffectivePath (Qiu et al. 2019).
    granularity : {"element", "channel"}
        A neuron of a feature map is one element, or one channel.
    baseline : {"global", "class"}
        Deltas from the global mean, or from the mean of the sample's predicted class
        (needs labels at ``fit``).
    propagation : {"code", "paper"}
        How ReLU, batch norm and max pooling pass counts back (SPEC.md section 3).
    batch_size : int
        Samples per batch when profiling and in forward analysis.

    Attributes
    ----------
    graph_ : DataFlowGraph
    profile_ : Profile
    theta_ : float
        The theta in use.

    Examples
    --------
    >>> import keras, numpy as np, nnslicer
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
    ...                           keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> slicer = nnslicer.Slicer(model).fit(x)
    >>> s = slicer.slice(x[0])
    >>> s.samples, s.rule
    (1, 'nnslicer')
    """

    def __init__(self, model, theta=None, rule="nnslicer", granularity="element", baseline="global",
                 propagation="code", batch_size=256):
        self.model = model
        self.theta = theta
        self.rule = rule
        self.granularity = granularity
        self.baseline = baseline
        self.propagation = propagation
        self.batch_size = batch_size

    def __repr__(self):
        fitted = "fitted" if hasattr(self, "graph_") else "not fitted"
        name = getattr(self.model, "name", type(self.model).__name__)
        theta = self.theta
        if theta is None:  # the value the rule uses, not the None that asks for it
            theta = DEFAULT_THETA.get(self.rule) if isinstance(self.rule, str) else None
        return (f"Slicer(model={name!r}, theta={theta!r}, rule={self.rule!r}, "
                f"granularity={self.granularity!r}, baseline={self.baseline!r}, {fitted})")

    def clone(self):
        """An unfitted Slicer of the same model and parameters (this one is left as it is)."""
        return type(self)(self.model, theta=self.theta, rule=self.rule, granularity=self.granularity,
                          baseline=self.baseline, propagation=self.propagation, batch_size=self.batch_size)

    # ------------------------------------------------------------------ fit
    def _validate(self):
        theta = check_rule(self.rule, self.theta)
        check_params("Slicer", PARAMETERS, granularity=self.granularity, baseline=self.baseline,
                     propagation=self.propagation, batch_size=self.batch_size)
        return theta

    def fit(self, x=None, y=None, *, profile=None, progress=None):
        """Lift the model, check the lift, and profile it on ``x`` (or use a saved ``profile``).

        The lifted model must compute what Keras computes: both run on the first profiling
        batch (at most 32 samples; with ``profile`` and no usable ``x``, on one sample: the
        profile's mean of the input), and their outputs may differ by at most 1e-4 of the
        output's scale (:func:`nnslicer.keras.verify`). The check costs one forward pass of
        each; a generator's first batch is still profiled.

        Parameters
        ----------
        x : array or iterable of batches, optional
            The profiling set (paper: the training data). Not needed with ``profile``.
        y : array of int, optional
            Labels; with them, per-class means are kept (``baseline="class"`` needs them).
        profile : Profile, optional
            A profile made earlier for this very model (see :meth:`Profile.load`).
        progress : callable, optional
            Called with the number of samples profiled so far.

        Returns
        -------
        self

        Raises
        ------
        UnsupportedLayerError
            For a layer nnslicer cannot lift, or when the lifted model computes another network
            than Keras (a bug of a lifter: the error names the first op that does).
        """
        theta = self._validate()
        frontend = frontend_of(self.model, "Slicer")
        graph = frontend.lift(self.model, self.granularity)
        log.info("lifted %r", graph)
        if self.granularity == "channel" and has_channels(graph[graph.logits].shape):
            raise UnsupportedLayerError(
                f"Model {graph.name!r} outputs a map or sequence of shape {graph[graph.logits].shape}: its output "
                "neurons are elements, which a channel-granularity slice cannot start from. Use "
                "granularity='element' (--granularity element) for this model.")
        if profile is None:
            if x is None:
                raise InvalidInputError("fit() needs profiling data x, or a saved profile.")
            x = frontend.verify_data(graph, self.model, x, y)
            start = time.perf_counter()
            profile = make_profile(graph, x, y, self.batch_size, progress=progress)
            log.info("profiled %s samples in %.2f s", f"{profile.n_samples:,}", time.perf_counter() - start)
        elif not isinstance(profile, Profile):
            raise InvalidParameterError(f"profile must be a Profile. Got {type(profile).__name__} instead.")
        else:
            profile.check(graph)
            head = None if x is None else first_batch(graph, x, y)[1]
            frontend.verify(graph, self.model, profile.means[graph.input] if head is None else head)
        if self.baseline == "class" and profile.class_means is None:
            raise InvalidInputError("baseline='class' needs per-class means: fit with labels y, or give a "
                                    "profile made with labels (nnslicer profile ... --labels y.npy).")
        self.graph_, self.profile_, self.theta_ = graph, profile, theta
        return self

    def _check_fitted(self):
        if not hasattr(self, "graph_"):
            raise NotFittedError("This Slicer is not fitted yet: call fit(x) (or fit(profile=...)) first.")

    # ------------------------------------------------------------------ slicing
    def _target(self, target):
        """One target as an array of flat output indices; None stays None (predicted class)."""
        if target is None:
            return None
        n = self.graph_.num_outputs
        items = [target] if np.ndim(target) == 0 else list(np.asarray(target).ravel())
        out = []
        for t in items:
            if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral):
                raise InvalidInputError(f"A target must be an output index (int). Got {t!r}.")
            if not 0 <= int(t) < n:
                raise InvalidInputError(f"Target {int(t)} is out of range: the model has {n} outputs (0..{n - 1}).")
            out.append(int(t))
        if not out:
            raise InvalidInputError("A target list is empty.")
        return np.unique(out)

    def _targets(self, targets, n):
        """Per-sample targets (None entries: the predicted class)."""
        if targets is None or isinstance(targets, (numbers.Integral, np.integer)):
            return [self._target(targets)] * n
        if isinstance(targets, np.ndarray) and targets.ndim == 1:
            targets = targets.tolist()
        try:
            targets = list(targets)
        except TypeError:
            raise InvalidInputError(f"targets must be None, an int, or one entry per sample. Got {targets!r}.") from None
        if len(targets) != n:
            raise InvalidInputError(f"targets has {len(targets)} entries for {n} samples.")
        return [self._target(t) for t in targets]

    def _chunk(self, n, n_jobs):
        """Samples per backward chunk: bounded by memory, and small enough to feed every worker."""
        per_sample = 16 * sum(int(np.prod(op.shape)) for op in self.graph_.ops)
        chunk = int(max(1, min(self.batch_size, CHUNK_BYTES // max(per_sample, 1))))
        if n_jobs and n_jobs > 1:
            chunk = min(chunk, max(1, -(-n // (2 * n_jobs))))
        return chunk

    def _samples(self, x, targets, shared):
        """``(batch, per-sample targets)`` pairs from an array, or from a stream of batches
        (a generator or a ``tf.data.Dataset`` of ``x`` or ``(x, y)``), so that data larger
        than memory can be sliced. ``shared``: ``targets`` is one target for every sample."""
        if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__") or not hasattr(x, "__iter__"):
            xs = as_batch(self.graph_, x)
            self._check_range(xs)
            yield xs, self._targets([targets] * len(xs) if shared and targets is not None else targets, len(xs))
            return
        if not shared and targets is not None and not isinstance(targets, (numbers.Integral, np.integer)):
            raise InvalidInputError("With a stream of batches, targets must be None or one int for every sample.")
        target = self._target(targets)
        for i, item in enumerate(x):
            xs = item[0] if isinstance(item, (tuple, list)) and len(item) == 2 else item
            xs = as_batch(self.graph_, xs)
            if i == 0:
                self._check_range(xs)
            yield xs, [target] * len(xs)

    def _check_range(self, x):
        """Warn when ``x`` lies far outside the input range the profile saw: its deltas from the
        profile's means would measure the scale, not the input (0-255 pixels against [0, 1])."""
        if self.profile_.input_range is None or not len(x):
            return
        low, high = self.profile_.input_range
        scale = max(high - low, abs(low), abs(high))  # how far "far" is; 0: an all-zero profile tells nothing
        x_low, x_high = float(np.min(x)), float(np.max(x))
        if scale > 0 and (x_low < low - scale or x_high > high + scale):
            warnings.warn(f"The inputs range over [{x_low:.4g}, {x_high:.4g}], far outside the [{low:.4g}, "
                          f"{high:.4g}] the profile saw: scale them as the profiling data was (their deltas "
                          "from the profile would measure the scale, not the input).", UserWarning, stacklevel=2)

    def _run(self, pairs, reduce, n_jobs=None, address=None, progress=None, until=None):
        """Forward (here, batched) + backward (here or on Ray workers), chunk by chunk;
        yields ``(neurons, synapses, targets)`` in sample order."""
        use_ray(n_jobs, address)  # checks n_jobs before any work

        def chunks():
            for x, targets in pairs:
                chunk = self._chunk(len(x), n_jobs)
                for lo in range(0, len(x), chunk):
                    tape = forward(self.graph_, self.profile_, x[lo:lo + chunk], self.baseline, self.batch_size)
                    yield tape, [t if t is not None else np.array([p])
                                 for t, p in zip(targets[lo:lo + chunk], tape.predictions)]

        params = {"rule": self.rule, "theta": self.theta_, "propagation": self.propagation, "until": until,
                  "kernels": resolve_kernels()}  # this process's choice, for Ray workers too
        yield from map_backward(self.graph_, chunks(), params, reduce, n_jobs, address, progress)

    def _meta(self, samples, aggregate, targets):
        return dict(model=self.graph_.name, fingerprint=self.graph_.fingerprint,
                    granularity=self.granularity, theta=self.theta_, rule=self.rule,
                    baseline=self.baseline, propagation=self.propagation, samples=samples,
                    aggregate=aggregate, targets=targets)

    def slice(self, x, target=None, aggregate="sum", n_jobs=None, address=None, progress=None):
        """One :class:`Slice` for a sample or a batch.

        Parameters
        ----------
        x : array, or iterable of batches
            One sample (the model's input shape), a batch of them, or a stream of batches
            (a generator or ``tf.data.Dataset`` of ``x`` or ``(x, y)``).
        target : int, list of int, or None
            Output neurons of the criterion; None: each sample's predicted class.
        aggregate : {"sum", "abs"}
            How a batch's per-sample counts add up: signed (the paper) or absolute (the
            authors' code, used for class-level slices).
        n_jobs, address, progress
            As in :meth:`slice_many`.
        """
        self._check_fitted()
        check_params("Slicer", PARAMETERS, aggregate=aggregate)
        neurons = synapses = None
        seen = []
        for n, s, t in self._run(self._samples(x, target, True), aggregate, n_jobs, address, progress):
            seen += t
            if neurons is None:
                neurons, synapses = n, s
            else:
                _accumulate(neurons, n)
                _accumulate(synapses, s)
        if not seen:
            raise InvalidInputError("x is empty: it holds no samples.")
        # arrays from Ray's object store are read-only: a slice owns writable ones
        neurons = {k: v if v.flags.writeable else v.copy() for k, v in neurons.items()}
        synapses = {k: v if v.flags.writeable else v.copy() for k, v in synapses.items()}
        single = [int(v) for v in seen[0]] if len(seen) == 1 else None
        return Slice(neurons, synapses, graph=self.graph_,
                     **self._meta(len(seen), aggregate if len(seen) > 1 else None, single))

    def slice_many(self, x, targets=None, n_jobs=None, address=None, progress=None):
        """One :class:`Slice` per sample of ``x``.

        Parameters
        ----------
        x : array, or iterable of batches
            As in :meth:`slice`.
        targets : None, int, or a sequence with one entry (int, list of int or None) per sample
            (None or an int for a stream of batches)
        n_jobs : int, optional
            Ray workers for the backward analysis (1, or None without ``RAY_ADDRESS`` in the
            environment: serially, here). Results equal the serial run exactly.
        address : str, optional
            A running Ray cluster (``ray start --head`` prints it; ``RAY_ADDRESS`` works too).
        progress : callable, optional
            Called with the number of samples done after each chunk.
        """
        self._check_fitted()
        out = []
        pairs = self._samples(x, targets, False)
        for neurons, synapses, chunk_targets in self._run(pairs, None, n_jobs, address, progress):
            for b, t in enumerate(chunk_targets):
                out.append(Slice({k: v[b].copy() for k, v in neurons.items()}, {k: v[b].copy() for k, v in synapses.items()},
                                 graph=self.graph_, **self._meta(1, None, [int(i) for i in t])))
        if not out:  # an empty stream, as slice() and synapse_counts() say
            raise InvalidInputError("x is empty: it holds no samples.")
        return out

    def synapse_counts(self, x, op, targets=None, n_jobs=None, address=None, progress=None):
        """Per-sample synapse counts of one weighted op, without the rest of the slices.

        Equal to ``np.stack([s.synapse_counts[op] for s in self.slice_many(x, targets)])``, but
        the backward analysis stops at ``op`` (the ops before it are not analysed) and only
        this op's counts are kept: what analyses that read one late layer need, for a fraction
        of the time and memory.

        Parameters
        ----------
        x, targets, n_jobs, address, progress
            As in :meth:`slice_many`.
        op : str
            A weighted op of :attr:`graph_` (see ``graph_.weighted_ops``).

        Returns
        -------
        ndarray of int64, shape ``(n_samples, *kernel_shape)``
        """
        self._check_fitted()
        if op not in self.graph_.weighted_ops:
            raise InvalidParameterError(f"The 'op' parameter of synapse_counts must be a weighted op "
                                        f"({', '.join(self.graph_.weighted_ops)}). Got {op!r} instead.")
        out = [synapses[op] for _, synapses, _ in
               self._run(self._samples(x, targets, False), None, n_jobs, address, progress, until=op)]
        if not out:
            raise InvalidInputError("x is empty: it holds no samples.")
        return np.concatenate(out)
