"""Recurrent layers unrolled into ops (SPEC.md section 3, ops beyond the paper).

SimpleRNN, LSTM and GRU (both ``reset_after`` settings), with ``return_sequences`` either way,
``go_backwards``, and Bidirectional wrappers of them, become, for each of the fixed number of
time steps, the ops Keras' cell computes: ``name/t{t}/x`` (the step's input, a slice of the
sequence), Dense ops with the layer's kernels, Add, Multiply, slices of the gates and
activations. Every step's Dense ops share the layer's kernels (``params["shares"]``): a
synapse's counts sum over time steps. The first step reads a zero state, so its ops are the
cell's with the state's terms left out (exactly what Keras computes, up to float rounding).

With a Keras mask (``Embedding(mask_zero=True)``), each step's new state is a ``select`` by the
step's mask (``name/t{t}/m``, a slice of it): a masked step keeps the state it had (zeros before
the first step), and, where Keras zeroes the outputs of masked steps (``zero_output_for_mask``,
which Bidirectional sets), so does the lift.
"""

from __future__ import annotations

import numpy as np

from .lifting import Unsupported, _activation_name, _arr, reads_masks, register_layer


class _Steps:
    """Collects the ops of one unrolled layer: each added op's name is ``prefix + name``."""

    def __init__(self, ctx, layer, prefix, source, shape):
        self.ctx, self.layer, self.prefix = ctx, layer, prefix
        self.ops, self.shapes, self.owners, self.arrays = [], {source: shape}, {}, {}

    def arr(self, variable):
        """A Keras weight as float32, one array a weight (so that the steps share it)."""
        return self.arrays.setdefault(id(variable), _arr(variable))

    def add(self, kind, name, inputs, shape, params=None, weights=None):
        name = self.prefix + name
        self.ops.append(self.ctx.op(kind, params, weights, self.layer, name=name, inputs=inputs,
                                    input_shapes=tuple(self.shapes[i] for i in inputs), shape=shape))
        self.shapes[name] = tuple(shape)
        return name

    def dense(self, name, x, kernel, bias, columns=None):
        """``x @ kernel[:, columns] + bias``, sharing ``kernel``'s synapses with its first user."""
        params = {} if columns is None else {"columns": list(columns)}
        owner = self.owners.setdefault(id(kernel), self.prefix + name)
        if owner != self.prefix + name:
            params["shares"] = owner
        width = kernel.shape[1] if columns is None else columns[1] - columns[0]
        return self.add("dense", name, (x,), (width,), params, {"kernel": kernel, "bias": bias})

    def act(self, name, x, activation):
        return x if activation == "linear" else self.add("activation", name, (x,), self.shapes[x],
                                                         {"activation": activation})

    def part(self, name, x, k, units):
        """Block ``k`` of ``units`` of a vector (a gate)."""
        return self.add("slice", name, (x,), (units,), {"axis": 0, "start": k * units, "stop": (k + 1) * units})

    def add2(self, name, a, b):
        return self.add("add", name, (a, b), self.shapes[a])

    def mul(self, name, a, b):
        return self.add("multiply", name, (a, b), self.shapes[a])

    def one_minus(self, name, x):
        return self.add("constant", name, (x,), self.shapes[x], {"steps": [["subtract_from", "c"]]},
                        {"c": np.ones((1,), np.float32)})


def _simple_rnn(s, cell, t, x, state):
    units = cell.units
    kernel, recurrent = s.arr(cell.kernel), s.arr(cell.recurrent_kernel)
    bias = s.arr(cell.bias) if cell.use_bias else np.zeros(units, np.float32)
    z = s.dense(f"t{t}/input", x, kernel, bias)
    if state is not None:
        z = s.add2(f"t{t}/sum", z, s.dense(f"t{t}/recurrent", state[0], recurrent, np.zeros(units, np.float32)))
    return (s.act(f"t{t}/h", z, _activation_name(cell.activation)),)


def _lstm(s, cell, t, x, state):
    units = cell.units
    kernel, recurrent = s.arr(cell.kernel), s.arr(cell.recurrent_kernel)
    bias = s.arr(cell.bias) if cell.use_bias else np.zeros(4 * units, np.float32)
    act, gate = _activation_name(cell.activation), _activation_name(cell.recurrent_activation)
    z = s.dense(f"t{t}/input", x, kernel, bias)
    if state is not None:
        z = s.add2(f"t{t}/sum", z, s.dense(f"t{t}/recurrent", state[0], recurrent, np.zeros(4 * units, np.float32)))
    i, f, g, o = (s.act(f"t{t}/{n}", s.part(f"t{t}/{n}_in", z, k, units), a)
                  for k, (n, a) in enumerate((("i", gate), ("f", gate), ("g", act), ("o", gate))))
    c = s.mul(f"t{t}/ig", i, g)
    if state is not None:
        c = s.add2(f"t{t}/c", s.mul(f"t{t}/fc", f, state[1]), c)
    return s.mul(f"t{t}/h", o, s.act(f"t{t}/c_act", c, act)), c


def _gru(s, cell, t, x, state):
    units = cell.units
    kernel, recurrent = s.arr(cell.kernel), s.arr(cell.recurrent_kernel)
    act, gate = _activation_name(cell.activation), _activation_name(cell.recurrent_activation)
    zero = np.zeros(3 * units, np.float32)
    bias = s.arr(cell.bias) if cell.use_bias else (np.zeros((2, 3 * units), np.float32) if cell.reset_after else zero)
    x_bias, h_bias = (bias[0], bias[1]) if cell.reset_after else (bias, zero)
    if state is None:  # h_{-1} = 0: the recurrent matrix is its bias alone
        mx = s.dense(f"t{t}/input", x, kernel, x_bias + np.concatenate([h_bias[:2 * units], zero[:units]]))
        z, r = (s.act(f"t{t}/{n}", s.part(f"t{t}/{n}_in", mx, k, units), gate) for k, n in enumerate("zr"))
        x_h = s.part(f"t{t}/xh", mx, 2, units)
        if cell.reset_after and h_bias[2 * units:].any():
            rh = s.add("constant", f"t{t}/rh", (r,), (units,), {"steps": [["multiply", "c"]]},
                       {"c": h_bias[2 * units:]})
            x_h = s.add2(f"t{t}/hh_in", x_h, rh)
        hh = s.act(f"t{t}/hh", x_h, act)
        return (s.mul(f"t{t}/h", s.one_minus(f"t{t}/1-z", z), hh),)
    (h,) = state
    mx = s.dense(f"t{t}/input", x, kernel, x_bias)
    if cell.reset_after:
        mh = s.dense(f"t{t}/recurrent", h, recurrent, h_bias)
        zr = [s.add2(f"t{t}/{n}_in", s.part(f"t{t}/x{n}", mx, k, units), s.part(f"t{t}/h{n}", mh, k, units))
              for k, n in enumerate("zr")]
        z, r = (s.act(f"t{t}/{n}", v, gate) for n, v in zip("zr", zr))
        rh = s.mul(f"t{t}/rh", r, s.part(f"t{t}/hh_rec", mh, 2, units))
    else:
        mh = s.dense(f"t{t}/recurrent", h, recurrent, zero[:2 * units], columns=(0, 2 * units))
        zr = [s.add2(f"t{t}/{n}_in", s.part(f"t{t}/x{n}", mx, k, units), s.part(f"t{t}/h{n}", mh, k, units))
              for k, n in enumerate("zr")]
        z, r = (s.act(f"t{t}/{n}", v, gate) for n, v in zip("zr", zr))
        rh = s.dense(f"t{t}/rh", s.mul(f"t{t}/r_h", r, h), recurrent, zero[:units], columns=(2 * units, 3 * units))
    hh = s.act(f"t{t}/hh", s.add2(f"t{t}/hh_in", s.part(f"t{t}/xh", mx, 2, units), rh), act)
    # h = z * h_prev + (1 - z) * hh, as Keras computes it
    return (s.add2(f"t{t}/h", s.mul(f"t{t}/zh", z, h), s.mul(f"t{t}/zhh", s.one_minus(f"t{t}/1-z", z), hh)),)


CELLS = {"SimpleRNN": _simple_rnn, "LSTM": _lstm, "GRU": _gru}


def _check(layer, ctx):
    """The number of steps; raises Unsupported for what cannot be unrolled."""
    extra = len(ctx.inputs) - (1 if _mask_of(ctx) is None else 2)
    if extra:
        raise Unsupported("an initial state (a second input)")
    steps = ctx.input_shapes[0][0] if len(ctx.input_shapes[0]) == 2 else None
    if steps is None:
        raise Unsupported(f"a sequence of variable length (input shape {ctx.input_shapes[0]}): fix the sequence "
                          "length, keras.Input((steps, features)), to unroll it")
    if getattr(layer, "stateful", False) or getattr(layer, "return_state", False):
        raise Unsupported("stateful=True or return_state=True")
    return steps


def _mask_of(ctx):
    """The graph name of the call's Keras mask, or None."""
    mask = ctx.arguments.kwargs.get("mask") if ctx.arguments is not None else None
    return None if mask is None else ctx.name_of(mask)


def _unroll(layer, ctx, s, x, zero_output=False):
    """Unroll ``layer`` over the sequence ``x`` into ``s``; returns the names of its outputs in
    the order Keras returns them (processing order: reversed for ``go_backwards``). With a mask,
    masked steps keep the state (and, with ``zero_output``, output zeros)."""
    steps = ctx.input_shapes[0][0]
    cell = CELLS[type(layer).__name__]
    mask = _mask_of(ctx)
    if mask is not None:
        s.shapes[mask] = (steps,)
    order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
    state, outputs = None, []
    for t, step in enumerate(order):
        x_t = s.add("slice", f"t{t}/x", (x,), ctx.input_shapes[0][1:],
                    {"axis": 0, "start": step, "stop": step + 1, "squeeze": True})
        new = cell(s, layer.cell, t, x_t, state)
        if mask is None:
            state = new
            outputs.append(state[0])
            continue
        m = s.add("slice", f"t{t}/m", (mask,), (1,), {"axis": 0, "start": step, "stop": step + 1})
        state = tuple(s.add("select", f"t{t}/keep{i}", (m, v) + (() if state is None else (state[i],)), s.shapes[v])
                      for i, v in enumerate(new))
        outputs.append(s.add("select", f"t{t}/out", (m, state[0]), s.shapes[state[0]]) if zero_output else state[0])
    return outputs


@register_layer("SimpleRNN")
@register_layer("LSTM")
@register_layer("GRU")
@reads_masks
def _recurrent(layer, ctx):
    steps = _check(layer, ctx)
    s = _Steps(ctx, layer, f"{ctx.name}/", ctx.inputs[0], ctx.input_shapes[0])
    outputs = _unroll(layer, ctx, s, ctx.inputs[0], getattr(layer, "zero_output_for_mask", False))
    return s.ops + [_output(ctx, layer, s, outputs, layer.return_sequences, steps)]


def _output(ctx, layer, s, outputs, sequences, steps, name=None):
    """The layer's output op: the outputs stacked over time, or the last one (an identity)."""
    name = name or ctx.name
    units = s.shapes[outputs[-1]]
    if sequences:
        return ctx.op("stack", layer=layer, name=name, inputs=tuple(outputs), input_shapes=(units,) * steps,
                      shape=(steps,) + units)
    return ctx.op("identity", layer=layer, name=name, inputs=(outputs[-1],), input_shapes=(units,), shape=units)


@register_layer("Bidirectional")
@reads_masks
def _bidirectional(layer, ctx):
    """Both directions unrolled (``name/forward/...``, ``name/backward/...``), the backward
    outputs put back in time order, merged as ``merge_mode`` says."""
    forward, backward = layer.forward_layer, layer.backward_layer
    if type(forward).__name__ not in CELLS or type(backward).__name__ not in CELLS:
        raise Unsupported(f"a Bidirectional of {type(forward).__name__} (supported: {', '.join(CELLS)})")
    steps = _check(forward, ctx)
    _check(backward, ctx)
    mode = layer.merge_mode
    if mode not in ("concat", "sum", "mul", "ave"):
        raise Unsupported(f"merge_mode={mode!r} (two outputs)")
    sequences = forward.return_sequences
    halves = []
    for direction, inner in (("forward", forward), ("backward", backward)):
        s = _Steps(ctx, layer, f"{ctx.name}/{direction}/", ctx.inputs[0], ctx.input_shapes[0])
        outputs = _unroll(inner, ctx, s, ctx.inputs[0], getattr(inner, "zero_output_for_mask", False))
        if sequences and inner.go_backwards:  # Keras flips the backward outputs back into time order
            outputs = outputs[::-1]
        halves.append((s, _output(ctx, layer, s, outputs, sequences, steps, name=f"{ctx.name}/{direction}")))
    ops = [op for s, out in halves for op in s.ops + [out]]
    names = tuple(out.name for _, out in halves)
    shapes = tuple(out.shape for _, out in halves)
    if mode == "concat":
        return ops + [ctx.op("concatenate", {"axis": len(ctx.shape) - 1}, layer=layer, inputs=names,
                             input_shapes=shapes)]
    if mode == "mul":
        return ops + [ctx.op("multiply", layer=layer, inputs=names, input_shapes=shapes)]
    if mode == "sum":
        return ops + [ctx.op("add", layer=layer, inputs=names, input_shapes=shapes)]
    total = ctx.op("add", layer=layer, name=f"{ctx.name}/sum", inputs=names, input_shapes=shapes)
    return ops + [total, ctx.op("constant", {"steps": [["multiply", "c"]]}, {"c": np.full((1,), 0.5, np.float32)},
                                layer, inputs=(total.name,), input_shapes=(total.shape,))]
