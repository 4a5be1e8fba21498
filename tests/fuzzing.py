"""Fuzzing nnslicer's files (issue 16): mutations of saved files, and the rule that judges a load.

Used by ``tests/test_fuzz.py``; see its docstring for the rule and how to run it. This module holds
what does not need pytest:

* a source of choices (:class:`RandomDraw`: a seeded ``random.Random``, for the tallied run;
  :class:`HypothesisDraw`: hypothesis' ``data.draw``, so that failures shrink), behind one
  method, ``integer(lo, hi)``;
* the mutation families, each ``family(draw, raw_bytes) -> Mutated``: :func:`byte_damage`
  (bit flips, truncations, overwritten, inserted or deleted bytes), :func:`header_edit` (the JSON
  header of an archive: a meta value replaced by another type or value, keys dropped or added,
  ``names``/``format``/``version``/``digest`` edited, the header array itself re-encoded),
  :func:`array_edit` (an array of another dtype, shape or values, arrays swapped, renamed,
  removed, added, zip members added or dropped), :func:`classifier_edit` (a detector's skops
  classifier opened and one of its node arrays or schema values edited) and :func:`json_edit`
  (the JSON compression report, edited as a tree);
* :class:`Kind` (how to load, save, compare, validate and use one file kind), :func:`judge` (the
  rule) and :class:`Tally`;
* independent validity checks ("oracles") per kind: what :meth:`save` can have written;
* a subprocess worker (``python tests/fuzzing.py score-detectors ...``) that scores detectors
  that loaded different from the original, so that a segfault in scikit-learn cannot take the
  test run down.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------- choices
ALPHABET = "ab/_-.0:é\u00ff\u4e2d \"\\\t\n\u0000\U0001f600"


class Draw:
    """Choices made from ``integer(lo, hi)`` (both ends included)."""

    def integer(self, lo, hi):  # pragma: no cover - abstract
        raise NotImplementedError

    def choice(self, seq):
        seq = list(seq)
        return seq[self.integer(0, len(seq) - 1)]

    def boolean(self, p=0.5):
        return self.integer(0, 999) < int(p * 1000)

    def text(self, max_size=8):
        return "".join(self.choice(ALPHABET) for _ in range(self.integer(0, max_size)))

    def binary(self, n):
        return bytes(self.integer(0, 255) for _ in range(n))


class RandomDraw(Draw):
    """Choices from ``random.Random(seed)`` (a string seed gives the same stream everywhere)."""

    def __init__(self, seed):
        import random

        self.rng = random.Random(seed)

    def integer(self, lo, hi):
        return self.rng.randint(lo, hi)


class HypothesisDraw(Draw):
    """Choices drawn from hypothesis' ``st.data()``: they shrink when a case fails."""

    def __init__(self, data):
        self.data = data

    def integer(self, lo, hi):
        from hypothesis import strategies as st

        return self.data.draw(st.integers(lo, hi))


# --------------------------------------------------------------------------- mutated files
@dataclass
class Mutated:
    """A mutated file: its bytes, what was done (readable steps) and whether it is *crafted*:
    self-consistent (an archive re-signed with a matching digest, or rewritten as format
    version 1, which has none; any JSON report), so that it may load as another valid object.
    A file that is only damaged (a stale digest, broken bytes of an archive) must load equal
    to the original or be refused."""

    data: bytes
    steps: list = field(default_factory=list)
    crafted: bool = False

    def describe(self):
        return "; ".join(self.steps) + ("" if self.crafted else " [damaged: must not load different]")


class RawJSON:
    """JSON text that ``json.dumps`` cannot write (a 5000-digit int, 100,000 nested lists)."""

    def __init__(self, text, label):
        self.text, self.label = text, label

    def __repr__(self):
        return self.label


def dumps(value):
    """``json.dumps`` that writes NaN and infinities (as Python does) and :class:`RawJSON` as is."""
    raws = []

    def swap(v):
        if isinstance(v, RawJSON):
            raws.append(v.text)
            return f"\u0001RAW{len(raws) - 1}\u0001"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\u0001RAW{i}\u0001"), raw)
    return text


def short(value, n=60):
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


# --------------------------------------------------------------------------- weird values
def neighbour(draw, value):
    """A value near ``value``, of its own type or a close one (the edits a careless hand makes)."""
    if isinstance(value, bool):
        return draw.choice([not value, int(value), str(value).lower(), None])
    if isinstance(value, int):
        return draw.choice([value + 1, value - 1, -value, value * 2**40, float(value), str(value), [value],
                            value + draw.integer(2, 1000), 0])
    if isinstance(value, float):
        return draw.choice([-value, value * 2, value / 2, float(np.nextafter(value, np.inf)), value + 1, 1 - value,
                            int(value) if math.isfinite(value) else 0, str(value), [value], 0.0, 1.0])
    if isinstance(value, str):
        return draw.choice([value + "x", value[:-1], value.upper(), "", value * 2, value[::-1], " " + value,
                            value.replace("/", "_") or "x", [value]])
    if isinstance(value, list):
        options = [[], value + value[-1:], value[::-1], [value], value[:-1], value + [None]]
        if value:
            options.append([neighbour(draw, value[0])] + value[1:])
        return draw.choice(options)
    if isinstance(value, dict):
        if not value:
            return draw.choice([[], None, {"x": 1}])
        keys = list(value)
        k = draw.choice(keys)
        return draw.choice([{x: v for x, v in value.items() if x != k}, dict(value, **{k + "x": value[k]}),
                            list(value.values()), {k: value[k]}])
    return weird_value(draw)


def weird_value(draw, original=None):
    """A value of any JSON type, often one no nnslicer file holds there."""
    if original is not None and draw.boolean(0.35):
        return neighbour(draw, original)
    group = draw.integer(0, 10)
    if group == 0:
        return draw.choice(["", "x", "nnslicer", "1", "0.5", "null", "NaN", "-1", "a" * 1000, "\u0000",
                            "é中\U0001f600", draw.text()])
    if group == 1:
        return draw.choice([[], [1], [None], [[]], ["a", 1], list(range(5)), [1.5, -2], [True]])
    if group == 2:
        return draw.choice([{}, {"": 1}, {"a": None}, {"a": {"b": []}}, {"model": "m"}, {"0": 1}])
    if group == 3:
        return draw.choice([0, 1, -1, 2, 3, 7, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64,
                            -2**63 - 1, 10**30, -10**30])
    if group == 4:
        return draw.choice([0.0, -0.0, 0.5, -0.5, 1.0, 1e-320, 1e308, -1e308, 0.30000000000000004, 1.5, 0.2, 2.5])
    if group == 5:
        return draw.choice([float("nan"), float("inf"), float("-inf")])
    if group == 6:
        return None
    if group == 7:
        return draw.choice([True, False])
    if group == 8:
        return draw.choice([RawJSON("1" * 5000, "<5000-digit int>"), RawJSON("1e400", "1e400"),
                            RawJSON("-0", "-0"), RawJSON("[" * 100000 + "]" * 100000, "<100000 nested lists>"),
                            RawJSON("1E-400", "1E-400"), RawJSON("0.1e1", "0.1e1")])
    if group == 9:
        return [weird_value(draw) for _ in range(draw.integer(1, 3))]
    return {draw.choice(["a", "", "0", "meta", "x/y"]): weird_value(draw) for _ in range(draw.integer(1, 2))}


def _paths(tree, here=()):
    """Every node of a JSON tree, as a path of keys and indices (the root is ``()``)."""
    out = [here]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, here + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, here + (i,))
    return out


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def edit_tree(draw, tree, name, protected=()):
    """One edit of a JSON tree: a node replaced (by a weird or a neighbouring value), dropped, or
    given a new key or element; returns ``(tree, step)``. The node is found by a random walk
    from the root (so that long arrays do not take every edit); keys of the root in
    ``protected`` are left alone."""
    path, node = (), tree
    while isinstance(node, (dict, list)) and node and draw.boolean(0.6 if path else 0.95):
        keys = [k for k in (node if isinstance(node, dict) else range(len(node))) if path or k not in protected]
        if not keys:
            break
        key = draw.choice(keys)
        path, node = path + (key,), node[key]
    where = name + "".join(f"[{p!r}]" for p in path)
    op = draw.integer(0, 9)
    if op <= 5 or not path and not isinstance(node, (dict, list)):
        new = weird_value(draw, node)
        if not path:
            return new, f"{where} := {short(new)}"
        _get(tree, path[:-1])[path[-1]] = new
        return tree, f"{where} := {short(new)}"
    if op <= 7 and path:
        parent = _get(tree, path[:-1])
        del parent[path[-1]]
        return tree, f"{where} dropped"
    if isinstance(node, dict):
        key = draw.choice(["x", "", "extra", "meta", "names", "0", "n/x", *list(node)[:3], draw.text()])
        new = weird_value(draw)
        key = key if key not in node else key + "_"
        node[key] = new
        return tree, f"{where} gains key {key!r} := {short(new)}"
    if isinstance(node, list):
        new = weird_value(draw) if not node or draw.boolean() else node[draw.integer(0, len(node) - 1)]
        node.insert(draw.integer(0, len(node)), new)
        return tree, f"{where} gains element {short(new)}"
    new = weird_value(draw, node)
    _get(tree, path[:-1])[path[-1]] = new
    return tree, f"{where} := {short(new)}"


# --------------------------------------------------------------------------- archives
def read_archive(raw):
    """``(header, [(name, array), ...])`` of an nnslicer archive's bytes."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        header = json.loads(bytes(f["header"]).decode())
        return header, [(name, f[f"a{i}"]) for i, name in enumerate(header["names"])]


def write_archive(header, arrays, header_array=None, members=None, drop=()):
    """The bytes of an archive: ``header`` (its ``names`` as given: they need not match) and the
    arrays as ``a0, a1, ...``; ``header_array`` replaces the header's encoding, ``members``
    adds zip members, ``drop`` leaves members out."""
    payload = {f"a{i}": a for i, a in enumerate(arrays)}
    payload["header"] = header_array if header_array is not None else \
        np.frombuffer(dumps(header).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    payload.update(members or {})
    for name in drop:
        payload.pop(name, None)
    buffer = io.BytesIO()
    np.savez(buffer, **payload)  # object arrays are pickled here: the loaders must refuse them
    return buffer.getvalue()


def sign(draw, header, arrays, steps):
    """Make the header's digest fit (most often), drop it for format version 1, or leave it stale;
    returns whether the file is crafted (self-consistent)."""
    from nnslicer.io import _digest

    mode = draw.choice(["sign"] * 7 + ["version 1"] * 2 + ["stale"] * 2)
    if mode == "stale":
        version = header.get("version")
        steps.append("digest left stale")
        return version == 1 and not isinstance(version, bool)  # version 1 files have no digest to check
    if mode == "version 1":
        header["version"] = 1
        header.pop("digest", None)
        steps.append("rewritten as format version 1 (no digest)")
        return True
    try:
        header["digest"] = _digest(header.get("meta"), header.get("names") if isinstance(header.get("names"), list)
                                   else [], arrays)
    except Exception:  # a header nnslicer cannot hash (the loader will not either)
        steps.append("digest left stale (the header cannot be hashed)")
        return False
    steps.append("re-signed")
    return True


def byte_damage(draw, raw, crafted=False):
    """Bytes of the file flipped, cut, overwritten, inserted or deleted."""
    data = bytearray(raw)
    steps = []
    for _ in range(draw.integer(1, 2)):
        n = len(data)
        op = draw.integer(0, 5) if n else 4
        if op <= 1:
            k = draw.integer(1, 8)
            at = []
            for _ in range(k):
                i, bit = draw.integer(0, n - 1), draw.integer(0, 7)
                data[i] ^= 1 << bit
                at.append(f"{i}.{bit}")
            steps.append(f"bits flipped at byte.bit {', '.join(at)}")
        elif op == 2:
            cut = draw.integer(0, n - 1)
            del data[cut:]
            steps.append(f"truncated to {cut} of {n} bytes")
        elif op == 3:
            i = draw.integer(0, n - 1)
            chunk = draw.binary(draw.integer(1, 16))
            data[i:i + len(chunk)] = chunk
            steps.append(f"bytes {i}..{i + len(chunk) - 1} overwritten with {chunk.hex()}")
        elif op == 4:
            i = draw.integer(0, n)
            chunk = draw.binary(draw.integer(1, 16))
            data[i:i] = chunk
            steps.append(f"{chunk.hex()} inserted at byte {i}")
        else:
            i = draw.integer(0, n - 1)
            k = draw.integer(1, 16)
            del data[i:i + k]
            steps.append(f"bytes {i}..{i + k - 1} deleted")
    return Mutated(bytes(data), steps, crafted)


def header_edit(draw, raw):
    """The archive's JSON header edited: its meta, names, format, version or digest, or the
    encoding of the header array itself; then (usually) re-signed."""
    header, named = read_archive(raw)
    names = [n for n, _ in named]
    arrays = [a for _, a in named]
    steps = []
    encode, keeps = None, False
    for _ in range(draw.integer(1, 2)):
        if not isinstance(header, dict):  # a first edit replaced the whole header
            break
        target = draw.choice(["meta"] * 6 + ["names"] * 2 + ["format", "version", "digest", "top", "encoding"])
        if target == "meta":
            header["meta"], step = edit_tree(draw, header.get("meta"), "meta")
            steps.append(step)
        elif target == "names":
            op = draw.integer(0, 4)
            if op == 0 and len(names) > 1:
                order = list(range(len(names)))
                i, j = draw.integer(0, len(names) - 1), draw.integer(0, len(names) - 1)
                order[i], order[j] = order[j], order[i]
                header["names"] = [names[k] for k in order]
                steps.append(f"names {names[i]!r} and {names[j]!r} swapped")
            elif op == 1 and names:
                i, j = draw.integer(0, len(names) - 1), draw.integer(0, len(names) - 1)
                header["names"] = list(names)
                header["names"][j] = names[i]
                steps.append(f"name {names[j]!r} replaced by a duplicate of {names[i]!r}")
            elif op == 2 and names:
                i = draw.integer(0, len(names) - 1)
                header["names"] = names[:i] + names[i + 1:]
                steps.append(f"name {names[i]!r} dropped from names")
            elif op == 3:
                header["names"] = names + [draw.choice(["extra", names[0] if names else "x", ""])]
                steps.append("a name added to names")
            else:
                header["names"] = weird_value(draw, names)
                steps.append(f"names := {short(header['names'])}")
        elif target in ("format", "version", "digest"):
            if draw.boolean(0.3):
                header.pop(target, None)
                steps.append(f"header[{target!r}] dropped")
            else:
                header[target] = weird_value(draw, header.get(target))
                steps.append(f"header[{target!r}] := {short(header[target])}")
        elif target == "top":
            header, step = edit_tree(draw, header, "header", protected=("meta",))
            steps.append(step)
        else:
            encode, step, keeps = draw.choice([
                (lambda t: np.frombuffer(t.encode("utf-16"), dtype=np.uint8), "header encoded as UTF-16", False),
                (lambda t: np.frombuffer(b"\xef\xbb\xbf" + t.encode(), dtype=np.uint8), "header with a UTF-8 BOM",
                 False),
                (lambda t: np.frombuffer(t.encode(), dtype=np.int8), "header array of int8", True),
                (lambda t: np.frombuffer(t.encode(), dtype=np.uint8)[None], "header array made 2-D", True),
                (lambda t: np.frombuffer((t + " garbage").encode(), dtype=np.uint8), "garbage after the header JSON",
                 False),
                (lambda t: np.frombuffer(t.encode()[:-1], dtype=np.uint8), "header JSON cut short", False),
                (lambda t: np.array(t), "header as a unicode array", False),
                (lambda t: np.frombuffer(t.encode(), dtype=np.uint8).astype(np.float64), "header array of float64",
                 False),
                (lambda t: np.frombuffer(("[" + t + "]").encode(), dtype=np.uint8), "header JSON wrapped in a list",
                 False),
            ])
            steps.append(step)
            break
    crafted = sign(draw, header, arrays, steps) if isinstance(header, dict) else False
    header_array = None
    if encode is not None:  # after signing: what is signed is the header, not its encoding
        header_array = encode(dumps(header))
        crafted = crafted and keeps  # only int8 or 2-D arrays of the same bytes keep the header readable
    return Mutated(write_archive(header, arrays, header_array), steps, crafted)


DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint64", "float16", "float32", "float64",
          "complex64", "complex128", "bool", "<U3", "S3", "M8[s]", "m8[s]", ">f8", ">i8", "V4", "object",
          [("a", "<i4")]]


def _retype(draw, a):
    dtype = draw.choice(DTYPES)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if dtype == "object":
            return np.array(a.tolist(), dtype=object) if a.ndim else np.array(0, dtype=object), "object"
        try:
            return a.astype(dtype), str(np.dtype(dtype))
        except (TypeError, ValueError):
            return np.zeros(a.shape, dtype=dtype), f"zeros of {np.dtype(dtype)}"


def _reshape(draw, a):
    options = [("raveled", lambda: a.ravel()), ("with an axis in front", lambda: a[None]),
               ("with an axis at the end", lambda: a[..., None]), ("emptied", lambda: a.reshape(-1)[:0]),
               ("as a 0-d array", lambda: a.reshape(-1)[0] if a.size else np.zeros((), a.dtype)),
               ("one element longer", lambda: np.concatenate([a.reshape(-1), a.reshape(-1)[:1]])),
               ("reshaped to (size, 1)", lambda: a.reshape(-1, 1))]
    if a.ndim:
        options += [("cut by one along axis 0", lambda: a[:-1]),
                    ("doubled along axis 0", lambda: np.concatenate([a, a])),
                    ("reversed along axis 0", lambda: a[::-1])]
    if a.ndim >= 2:
        options += [("transposed", lambda: a.T), ("with its last axis dropped", lambda: a[..., 0])]
    label, fn = draw.choice(options)
    return np.asarray(fn()), label


def _bad_number(draw, dtype):
    if dtype.kind == "f":
        return draw.choice([np.nan, np.inf, -np.inf, -1.0, 0.0, -0.0, 1e38, 1e-40, 2.0, 0.5])
    if dtype.kind == "c":
        return draw.choice([complex(np.nan, 0), complex(1, 1), complex(0, np.inf)])
    if dtype.kind == "b":
        return draw.choice([True, False])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        value = draw.choice([-1, 0, 1, 2, 3, 10**6, info.max, info.min])
        return min(max(value, int(info.min)), int(info.max))
    return None


def _revalue(draw, a):
    a = np.array(a)
    if not a.size or a.dtype.kind not in "fciub":
        return a, "left as is (no values to edit)"
    op = draw.integer(0, 4)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if op <= 2:
            flat = a.reshape(-1)
            at = sorted({draw.integer(0, a.size - 1) for _ in range(draw.integer(1, 3))})
            value = _bad_number(draw, a.dtype)
            flat[at] = value
            return flat.reshape(a.shape), f"values at {at} := {value!r}"
        if op == 3 and a.dtype.kind != "b":
            return -a, "negated"
        value = _bad_number(draw, a.dtype)
        return np.full_like(a, value), f"filled with {value!r}"


def _name_like(draw, names):
    prefix = draw.choice(["n/", "s/", "mean/", "class_mean/", "index/", "value/", ""])
    base = draw.choice(names) if names else "x"
    rest = base.split("/", 1)[-1] if "/" in base else base
    return draw.choice([prefix + rest, base + "x", prefix + draw.text(4), "class_counts", "classifier",
                        "clean_scores", "header", "", base.upper()])


def array_edit(draw, raw):
    """Arrays of the archive edited (dtype, shape, values), swapped, renamed, removed, added or
    copied over each other, or zip members added or dropped; then (usually) re-signed."""
    header, named = read_archive(raw)
    named = list(named)
    steps = []
    members, drop = {}, []
    for _ in range(draw.integer(1, 2)):
        op = draw.choice(["dtype"] * 3 + ["shape"] * 3 + ["values"] * 4 + ["swap", "remove", "add", "rename", "copy",
                                                                             "member"])
        if not named and op not in ("add", "member"):
            op = "add"
        i = draw.integer(0, len(named) - 1) if named else 0
        if op in ("dtype", "shape", "values"):
            name, a = named[i]
            new, label = {"dtype": _retype, "shape": _reshape, "values": _revalue}[op](draw, a)
            named[i] = (name, new)
            steps.append(f"array {name!r} ({a.dtype}{list(a.shape)}) {'as ' if op == 'dtype' else ''}{label}")
        elif op == "swap":
            j = draw.integer(0, len(named) - 1)
            (ni, ai), (nj, aj) = named[i], named[j]
            named[i], named[j] = (ni, aj), (nj, ai)
            steps.append(f"arrays {ni!r} and {nj!r} swapped")
        elif op == "remove":
            name, _ = named.pop(i)
            steps.append(f"array {name!r} removed")
        elif op == "add":
            name = _name_like(draw, [n for n, _ in named])
            source = named[draw.integer(0, len(named) - 1)][1] if named and draw.boolean() else \
                np.arange(draw.integer(0, 6), dtype=draw.choice(["int64", "float32", "float64", "uint8"]))
            named.insert(draw.integer(0, len(named)), (name, np.array(source)))
            steps.append(f"array {name!r} ({source.dtype}{list(source.shape)}) added")
        elif op == "rename":
            name = _name_like(draw, [n for n, _ in named])
            old, a = named[i]
            named[i] = (name, a)
            steps.append(f"array {old!r} renamed {name!r}")
        elif op == "copy":
            j = draw.integer(0, len(named) - 1)
            named[i] = (named[i][0], np.array(named[j][1]))
            steps.append(f"array {named[i][0]!r} replaced by a copy of {named[j][0]!r}")
        else:
            if draw.boolean():
                member = draw.choice(["a99", "junk", f"a{len(named)}", "header2"])
                members[member] = np.arange(3)
                steps.append(f"zip member {member!r} added")
            else:
                member = draw.choice(["header", f"a{i}"])
                drop.append(member)
                steps.append(f"zip member {member!r} left out")
    header["names"] = [n for n, _ in named]
    arrays = [a for _, a in named]
    crafted = sign(draw, header, arrays, steps) and not members and not drop
    return Mutated(write_archive(header, arrays, members=members, drop=drop), steps, crafted)


def _node_value(draw, dtype, n):
    if dtype.kind in "iu":
        value = draw.choice([-1, -2, 0, 1, n - 1, n, n + 5, 2**31 - 1, -2**31, 10**6, 26, 27, 3])
        info = np.iinfo(dtype)
        return min(max(value, info.min), info.max)
    return draw.choice([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e300, -1e300, 0.5])


def classifier_edit(draw, raw):
    """A detector's classifier (skops: a zip of .npy arrays and schema.json) opened and edited:
    a field of one tree node, a value of its arrays, an array's shape or dtype, or a value or
    type name of its schema; then rezipped and (usually) re-signed."""
    header, named = read_archive(raw)
    names = [n for n, _ in named]
    k = names.index("classifier")
    blob = bytes(named[k][1])
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        infos = z.infolist()
        members = {info.filename: z.read(info.filename) for info in infos}
    steps = []
    npys = [m for m in members if m.endswith(".npy")]  # in the zip's order: their names are object ids
    if npys and draw.boolean(0.7):
        member = draw.choice(npys)
        label = f"array {npys.index(member)}"
        a = np.load(io.BytesIO(members[member]), allow_pickle=False)
        if a.dtype.names and a.size:  # the tree's nodes
            a = a.copy()
            fieldname = draw.choice(a.dtype.names)
            i = draw.integer(0, a.size - 1)
            value = _node_value(draw, a.dtype[fieldname], a.size)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                a[fieldname].reshape(-1)[i] = value
            steps.append(f"classifier: node {i} field {fieldname!r} := {value!r} (in its {label})")
        else:
            op = draw.integer(0, 3)
            if op <= 1:
                a, edit = _revalue(draw, a)
            elif op == 2:
                a, edit = _reshape(draw, a)
            else:
                a, edit = _retype(draw, a)
                if a.dtype == object:
                    a, edit = a.astype(str), "str"
            steps.append(f"classifier: its {label} ({a.dtype}) {edit}")
        buffer = io.BytesIO()
        np.save(buffer, a, allow_pickle=False)
        members[member] = buffer.getvalue()
    else:
        schema = json.loads(members["schema.json"])
        nodes = [p for p in _paths(schema) if p and p[-1] in ("content", "__class__", "__module__", "shape")
                 and isinstance(_get(schema, p), str)]
        path = draw.choice(nodes)
        old = _get(schema, path)
        if path[-1] == "content":
            try:
                new = dumps(weird_value(draw, json.loads(old)))
            except ValueError:
                new = draw.choice(["", "x", old + "x"])
        elif path[-1] == "__class__":
            new = draw.choice(["DecisionTreeClassifier", "RandomForestClassifier", "Tree", "ndarray", "dict",
                               "list", "int", "str", "system", "function", "eval", "float64", "int64"])
        elif path[-1] == "__module__":
            new = draw.choice(["builtins", "numpy", "os", "sklearn.tree._classes", "sklearn.tree._tree",
                               "sklearn.ensemble._forest", "subprocess"])
        else:
            new = draw.choice(["[]", "[1]", "[-1]", "[1000000]", "x"])
        _get(schema, path[:-1])[path[-1]] = new
        members["schema.json"] = dumps(schema).encode()
        where = "".join(f"[{p!r}]" for p in path[-3:])
        steps.append(f"classifier schema {where}: {short(old, 30)} -> {short(new, 30)}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for info in infos:  # the same entries, times and all: the same bytes where nothing changed
            z.writestr(zipfile.ZipInfo(info.filename, info.date_time), members[info.filename])
    named[k] = ("classifier", np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    arrays = [a for _, a in named]
    crafted = sign(draw, header, arrays, steps)
    return Mutated(write_archive(header, arrays), steps, crafted)


def json_edit(draw, raw):
    """The JSON report edited as a tree (values replaced, keys dropped or added), or rewritten
    as UTF-16 or with a BOM; always crafted (JSON carries no digest)."""
    tree = json.loads(raw)
    steps = []
    for _ in range(draw.integer(1, 2)):
        tree, step = edit_tree(draw, tree, "report")
        steps.append(step)
    text = dumps(tree)
    encoding = draw.choice(["utf-8"] * 8 + ["utf-16", "bom"])
    if encoding == "utf-16":
        steps.append("written as UTF-16")
        return Mutated(text.encode("utf-16"), steps, True)
    data = text.encode("utf-8", "surrogatepass")
    if encoding == "bom":
        steps.append("with a UTF-8 BOM")
        data = b"\xef\xbb\xbf" + data
    return Mutated(data, steps, True)


def report_bytes(draw, raw):
    return byte_damage(draw, raw, crafted=True)


# --------------------------------------------------------------------------- the rule
OUTCOMES = ("same", "refused", "changed", "crash", "silent")


@dataclass(repr=False)
class Kind:
    """One file kind: ``load(path)``, ``save(obj, path)``, ``equal(a, b)``, ``problem(obj)`` (the
    oracle: why ``obj`` is not something ``save`` can have written, or None) and ``use(obj)``
    (cheap uses that must raise nothing but nnslicer's errors; None: not in this process)."""

    name: str
    suffix: str
    original: object
    raw: bytes
    load: object
    save: object
    equal: object
    problem: object
    use: object = None
    families: dict = field(default_factory=dict)

    def __repr__(self):
        return f"<{self.name} files>"


@dataclass
class Outcome:
    kind: str
    outcome: str
    detail: str = ""
    mutation: str = ""
    seed: str = ""

    @property
    def failed(self):
        return self.outcome in ("crash", "silent")

    def __str__(self):
        seed = f" (seed {self.seed!r})" if self.seed else ""
        return f"{self.kind}: {self.outcome.upper()}{seed}: {self.detail}\n    mutation: {self.mutation}"


def _exc(exc):
    return f"{type(exc).__name__}: {short(str(exc), 300)}"


def judge(kind, mutated, directory, seed=""):
    """Load ``mutated`` as a file of ``kind`` and name the outcome (see test_fuzz's docstring):
    same, refused, changed (a valid other object, from a crafted file), crash or silent."""
    from nnslicer.errors import FileFormatError, NNSlicerError

    path = os.path.join(directory, f"mutated{kind.suffix}")
    with open(path, "wb") as f:
        f.write(mutated.data)
    out = Outcome(kind.name, "", mutation=mutated.describe(), seed=seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = kind.load(path)
    except FileFormatError as exc:
        out.outcome, out.detail = "refused", str(exc)[:300]
        return out
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        out.outcome, out.detail = "crash", _exc(exc)
        return out
    try:
        if kind.equal(obj, kind.original):
            out.outcome = "same"
            return out
    except Exception as exc:  # noqa: BLE001
        out.outcome, out.detail = "crash", f"the loaded object cannot even be compared ({_exc(exc)})"
        return out
    if not mutated.crafted:
        out.outcome, out.detail = "silent", "a damaged file (no valid digest) loaded as a different object"
        return out
    try:
        problem = kind.problem(obj)
    except Exception as exc:  # noqa: BLE001
        problem = f"checking it raised {_exc(exc)}"
    if problem:
        out.outcome, out.detail = "silent", f"loaded an object that no save writes: {problem}"
        return out
    again = os.path.join(directory, f"again{kind.suffix}")
    try:
        kind.save(obj, again)
        back = kind.load(again)
        same = kind.equal(back, obj)
    except Exception as exc:  # noqa: BLE001
        out.outcome, out.detail = "silent", f"the loaded object does not save and load again ({_exc(exc)})"
        return out
    if not same:
        out.outcome, out.detail = "silent", "the loaded object saves and loads as yet another object"
        return out
    if kind.use is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kind.use(obj)
        except NNSlicerError:
            pass
        except Exception as exc:  # noqa: BLE001
            out.outcome, out.detail = "crash", f"the loaded object fails in use ({_exc(exc)})"
            return out
    out.outcome, out.detail = "changed", "a valid other object, from a crafted file"
    return out


class Tally:
    """Per section ("seeded", "hypothesis") and kind: how many inputs had each outcome, and the
    failures (a few per kind and outcome)."""

    KEEP = 5

    def __init__(self):
        self.counts = {}
        self.failures = {}

    def add(self, section, out):
        row = self.counts.setdefault(section, {}).setdefault(out.kind, dict.fromkeys(("tried",) + OUTCOMES, 0))
        row["tried"] += 1
        row[out.outcome] += 1
        if out.failed:
            kept = self.failures.setdefault(section, {}).setdefault(f"{out.kind}/{out.outcome}", [])
            if len(kept) < self.KEEP and str(out) not in kept:  # hypothesis replays a failure as it shrinks
                kept.append(str(out))

    def correct(self, section, kind, old, new):
        """Move one input from outcome ``old`` to ``new`` (a subprocess found more)."""
        row = self.counts[section][kind]
        row[old] -= 1
        row[new] += 1

    def table(self, section):
        rows = [f"{'kind':<10}{'tried':>7}{'same':>7}{'refused':>9}{'changed':>9}{'crash':>7}{'silent':>8}"]
        for kind, r in sorted(self.counts.get(section, {}).items()):
            rows.append(f"{kind:<10}{r['tried']:>7}{r['same']:>7}{r['refused']:>9}{r['changed']:>9}"
                        f"{r['crash']:>7}{r['silent']:>8}")
        return "\n".join(rows)

    def as_dict(self):
        return {"counts": self.counts, "failures": self.failures}


# --------------------------------------------------------------------------- oracles
def _int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and \
        (isinstance(v, (int, np.integer)) or math.isfinite(v))


def _finite_tree(v):
    """Whether a JSON-like value holds no NaN or infinity anywhere."""
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_finite_tree(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return all(_finite_tree(x) for x in v)
    return True


def slice_problem(s):
    """What ``Slice.save`` cannot have written: metadata out of its choices, counts that are not
    integer arrays."""
    from nnslicer.backward.rules import RULES

    m = s.meta
    if set(m) != {"model", "fingerprint", "granularity", "theta", "rule", "baseline", "propagation", "samples",
                  "aggregate", "targets"}:
        return f"metadata keys {sorted(m)}"
    for key in ("model", "fingerprint"):
        if m[key] is not None and not isinstance(m[key], str):
            return f"{key} {m[key]!r}"
    for key, choices in (("granularity", ("element", "channel")), ("rule", RULES), ("baseline", ("global", "class")),
                         ("propagation", ("code", "paper")), ("aggregate", ("sum", "abs", "union", "intersection"))):
        if m[key] is not None and m[key] not in choices:
            return f"{key} {m[key]!r}"
    if m["theta"] is not None and not (_real(m["theta"]) and 0 < m["theta"] < 1):
        return f"theta {m['theta']!r}"
    if not _int(m["samples"]) or m["samples"] < 1:
        return f"samples {m['samples']!r}"
    if m["targets"] is not None and not (isinstance(m["targets"], list) and m["targets"]
                                         and all(_int(t) and t >= 0 for t in m["targets"])):
        return f"targets {m['targets']!r}"
    for table in (s.neuron_counts, s.synapse_counts):
        for k, v in table.items():
            if not isinstance(k, str) or v.dtype.kind not in "iu":
                return f"counts {k!r} of {v.dtype}"
    return None


def profile_problem(p):
    """What ``Profile.save`` cannot have written: non-string names, a sample count below one,
    means that are not finite floats, class means and counts that do not fit them."""
    if not isinstance(p.model, str) or not isinstance(p.fingerprint, str):
        return f"model {p.model!r}, fingerprint {p.fingerprint!r}"
    if not _int(p.n_samples) or p.n_samples < 1:
        return f"n_samples {p.n_samples!r}"
    if not p.means:
        return "no means"
    for table in (p.means, p.class_means or {}):
        for k, v in table.items():
            if v.dtype.kind != "f" or not np.isfinite(v).all():
                return f"mean {k!r} of {v.dtype}{list(v.shape)}"
    if (p.class_means is None) != (p.class_counts is None):
        return "class means without counts or counts without means"
    if p.class_means is not None:
        c = p.class_counts
        if c.ndim != 1 or not len(c) or (c < 0).any() or c.sum() > p.n_samples:
            return f"class counts {c!r}"
        if set(p.class_means) != set(p.means):
            return "class means of other tensors"
        for k, v in p.class_means.items():
            if v.shape != (len(c),) + p.means[k].shape:
                return f"class mean {k!r} shaped {v.shape}"
    return None


def secret_problem(s):
    """What ``ProtectionSecret.save`` cannot have written: anything :func:`protect` would not
    (positions, values, shapes, meta), except for free strings (digests, model and method names:
    hand-made secrets save and load too; :func:`restore` checks the digests)."""
    from analyses.protection import SCOPES

    for d in (s.protected_digest, s.original_digest):
        if not isinstance(d, str):
            return f"digest {d!r}"
    if set(s.indices) != set(s.shapes) or set(s.values) != set(s.shapes):
        return "indices, values and shapes of different weights"
    for k, shape in s.shapes.items():
        layer, _, weight = k.rpartition("/")
        if not layer or weight != "kernel":
            return f"weight {k!r}"
        if not shape or any(d < 1 for d in shape):
            return f"shape {shape} of {k!r}"
        idx, val = s.indices[k], s.values[k]
        if idx.ndim != 1 or len(np.unique(idx)) != len(idx) \
                or (idx.size and (idx.min() < 0 or idx.max() >= math.prod(shape))):
            return f"positions of {k!r}"
        if val.dtype.kind != "f" or val.shape != idx.shape or not np.isfinite(val).all():
            return f"values of {k!r}: {val.dtype}{val.shape}"
    m = s.meta
    if not all(isinstance(k, str) for k in m) or not _finite_tree(m):
        return f"meta {m!r}"
    if "model" in m and not isinstance(m["model"], str):
        return f"meta model {m['model']!r}"
    if "method" in m and not isinstance(m["method"], str):
        return f"meta method {m['method']!r}"
    if "scope" in m and m["scope"] not in SCOPES:
        return f"meta scope {m['scope']!r}"
    if "fraction" in m and not (_real(m["fraction"]) and 0 < m["fraction"] < 1):
        return f"meta fraction {m['fraction']!r}"
    classes = m.get("classes")
    if "classes" in m and not (isinstance(classes, list) and classes and all(_int(c) and c >= 0 for c in classes)
                               and len(set(classes)) == len(classes)):
        return f"meta classes {m['classes']!r}"
    if "fraction" in m:
        layers = [[k] for k in s.shapes] if m.get("scope", "layer") == "layer" else [list(s.shapes)]
        for keys in layers:
            n = sum(math.prod(s.shapes[k]) for k in keys)
            if n and sum(s.indices[k].size for k in keys) != int(round(m["fraction"] * n)):
                return f"not round(fraction * n) positions hidden in {keys}"
    return None


def report_problem(r):
    """What ``CompressionReport.save_json`` (after ``compare``) cannot have written."""
    from analyses.compression_report import SHIFT_EDGES

    def unit(v, lo=0.0):
        return _real(v) and lo <= v <= 1

    if not isinstance(r.name_a, str) or not isinstance(r.name_b, str):
        return "names"
    if not _int(r.samples) or r.samples < 1:
        return f"samples {r.samples!r}"
    classes = r.classes
    if not isinstance(classes, tuple) or not classes or not all(_int(c) and c >= 0 for c in classes) \
            or len(set(classes)) != len(classes):
        return f"classes {classes!r}"
    for name in ("class_samples", "class_accuracy_a", "class_accuracy_b", "survival"):
        if name == "survival" and r.survival is None:
            continue
        d = getattr(r, name)
        if not isinstance(d, dict) or set(d) != set(classes):
            return f"{name} keys"
        if name == "class_samples":
            if not all(_int(v) and v >= 1 for v in d.values()) or sum(d.values()) > r.samples:
                return f"{name} {d!r}"
        elif not all(unit(v) for v in d.values()):
            return f"{name} {d!r}"
    for name in ("accuracy_a", "accuracy_b", "flipped", "confidence_shift_abs"):
        if not unit(getattr(r, name)):
            return f"{name} {getattr(r, name)!r}"
    if not unit(r.confidence_shift, -1.0):
        return f"confidence_shift {r.confidence_shift!r}"
    for name in ("confidence_shift_flipped", "confidence_shift_unchanged", "saliency_mad"):
        v = getattr(r, name)
        if v is not None and not unit(v):
            return f"{name} {v!r}"
    h = r.shift_histogram
    if not isinstance(h, dict) or set(h) != {"flipped", "unchanged"} or not all(
            isinstance(c, list) and len(c) == len(SHIFT_EDGES) - 1 and all(_int(x) and x >= 0 for x in c)
            for c in h.values()):
        return f"shift_histogram {short(h)}"
    if not _int(r.saliency_samples) or not 0 <= r.saliency_samples <= r.samples:
        return f"saliency_samples {r.saliency_samples!r}"
    for name in ("survival_note", "saliency_note"):
        if getattr(r, name) is not None and not isinstance(getattr(r, name), str):
            return name
    s = r.settings
    if not isinstance(s, dict) or not _finite_tree(s):
        return f"settings {s!r}"
    if "theta" in s and not (_real(s["theta"]) and 0 < s["theta"] < 1) or \
            "granularity" in s and s["granularity"] not in ("element", "channel") or \
            "max_per_class" in s and not (_int(s["max_per_class"]) and s["max_per_class"] >= 1):
        return f"settings {s!r}"
    if not isinstance(r.saliency_examples, list):
        return "saliency_examples"
    for e in r.saliency_examples:
        ints = ("index", "label", "pred_a", "pred_b")
        if not isinstance(e, dict) or set(e) != {*ints, "image", "saliency_a", "saliency_b"}:
            return f"saliency example {short(e)}"
        if not all(_int(e[k]) and e[k] >= 0 for k in ints) or e["index"] >= r.samples:
            return f"saliency example {short(e)}"
        arrays = [np.asarray(e[k]) for k in ("image", "saliency_a", "saliency_b")]
        if any(a.dtype.kind not in "fi" or not np.isfinite(a).all() for a in arrays):
            return "saliency example arrays"
        image, sa, sb = arrays
        if image.ndim not in (2, 3) or sa.shape != image.shape[:2] or sb.shape != sa.shape \
                or (sa < 0).any() or (sa > 1).any() or (sb < 0).any() or (sb > 1).any():
            return "saliency example shapes"
    return None


def tree_problem(est, n_features, n_classes):
    """Why a fitted DecisionTreeClassifier cannot be scikit-learn's own, for ``n_features``
    features and classes below ``n_classes``, or None."""
    classes = np.asarray(getattr(est, "classes_", None))
    if classes.ndim != 1 or classes.dtype.kind not in "iu" or not len(classes) or \
            (np.diff(classes) <= 0).any() or classes.min() < 0 or classes.max() >= n_classes:
        return f"classes_ {classes!r}"
    if getattr(est, "n_features_in_", None) != n_features or getattr(est, "n_outputs_", None) != 1:
        return "n_features_in_ or n_outputs_"
    t = est.tree_
    n = t.node_count
    left, right, feature = t.children_left, t.children_right, t.feature
    if n < 1 or len(left) != n or len(right) != n or t.value.shape != (n, 1, len(classes)):
        return f"node arrays of {n} nodes"
    if t.n_features != n_features or list(t.n_classes) != [len(classes)]:
        return "tree n_features or n_classes"
    seen, depth, level = {0}, 0, [0]
    while True:
        below = []
        for i in level:
            if (left[i] == -1) != (right[i] == -1):
                return f"node {i} has one child"
            if left[i] == -1:
                continue
            if not 0 <= feature[i] < n_features or not np.isfinite(t.threshold[i]):
                return f"node {i} splits on feature {feature[i]} at {t.threshold[i]}"
            for c in (left[i], right[i]):
                if not 0 <= c < n or c in seen:
                    return f"node {i} has child {c}"
                seen.add(int(c))
                below.append(int(c))
        if not below:
            break
        level, depth = below, depth + 1
    if len(seen) != n:
        return f"{n - len(seen)} nodes are not in the tree"
    if t.max_depth != depth:
        return f"max_depth {t.max_depth} of a tree {depth} deep"
    if not np.isfinite(t.value).all() or (t.value < 0).any():
        return "node values"
    return None


def detector_state(det):
    """Everything a SliceDetector file holds, as plain values to compare (the detectors define
    no ``==``): parameters, slicer settings, profile, offsets, clean scores, and every tree's
    node and value arrays as bytes."""
    clf = det.classifier_
    trees = list(getattr(clf, "estimators_", [clf]))

    def arr(a):
        a = np.asarray(a)
        if a.dtype.names:  # field by field: the padding between fields holds any bytes
            return tuple((f, arr(a[f])) for f in a.dtype.names)
        return (a.dtype.str, a.shape, a.tobytes()) if a.dtype != object else ("object", repr(a))

    def tree(est):
        state = est.tree_.__getstate__()
        return (type(est).__name__, repr(sorted(est.get_params().items())), arr(est.classes_), est.n_features_in_,
                est.n_outputs_, repr(est.n_classes_), state["max_depth"], state["node_count"],
                arr(state["nodes"]), arr(state["values"]))

    s = det.slicer_
    return {"type": type(det).__name__, "layer": det.layer_, "classifier": det.classifier,
            "random_state": det.random_state, "chunk": det.chunk, "contamination": det.contamination,
            "offset": det.offset_, "n_fit": getattr(det, "n_fit_", None),
            "clean": arr(det.clean_scores_) if hasattr(det, "clean_scores_") else None,
            "slicer": (s.theta_, s.rule, s.granularity, s.baseline, s.propagation, s.batch_size),
            "profile": s.profile_, "fingerprint": s.graph_.fingerprint,
            "clf": (type(clf).__name__, repr(sorted(clf.get_params().items())), arr(clf.classes_),
                    getattr(clf, "n_features_in_", None), [tree(t) for t in trees])}


def detector_equal(a, b):
    sa, sb = detector_state(a), detector_state(b)
    same = sa.keys() == sb.keys() and all(type(sa[k]) is type(sb[k]) and sa[k] == sb[k] for k in sa)
    return bool(same)


def detector_problem(det):
    """What ``SliceDetector.save`` cannot have written, for the model it was loaded for."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    from nnslicer.backward.rules import RULES

    s = det.slicer_
    graph = s.graph_
    if det.layer_ not in graph.weighted_ops:
        return f"layer {det.layer_!r}"
    if det.classifier not in ("tree", "forest"):
        return f"classifier {det.classifier!r}"
    want = DecisionTreeClassifier if det.classifier == "tree" else RandomForestClassifier
    if type(det.classifier_) is not want:
        return f"a {type(det.classifier_).__name__} for classifier={det.classifier!r}"
    if det.random_state is not None and not _int(det.random_state):
        return f"random_state {det.random_state!r}"
    if not _int(det.chunk) or det.chunk < 1:
        return f"chunk {det.chunk!r}"
    c = det.contamination
    if c is not None and not (_real(c) and 0 < c < 0.5):
        return f"contamination {c!r}"
    if not _real(det.offset_) or (c is None and det.offset_ != 0) or not -1 <= det.offset_ <= 1:
        return f"offset {det.offset_!r} with contamination {c!r}"
    n_fit = getattr(det, "n_fit_", None)
    if n_fit is not None and (not _int(n_fit) or n_fit < 1):
        return f"n_fit {n_fit!r}"
    if not (_real(s.theta_) and 0 < s.theta_ < 1) or s.rule not in RULES \
            or s.granularity not in ("element", "channel") or s.baseline not in ("global", "class") \
            or s.propagation not in ("code", "paper") or not _int(s.batch_size) or s.batch_size < 1:
        return f"slicer settings {(s.theta_, s.rule, s.granularity, s.baseline, s.propagation, s.batch_size)}"
    problem = profile_problem(s.profile_)
    if problem:
        return f"profile: {problem}"
    try:
        s.profile_.check(graph)
    except Exception as exc:  # noqa: BLE001
        return f"a profile of another model ({_exc(exc)})"
    # fit scores the clean samples held out for a forest, or with contamination (forests saved
    # before contamination existed have no clean scores)
    held_out = det.classifier == "forest" or c is not None
    if c is not None and not hasattr(det, "clean_scores_"):
        return f"contamination {c} without the clean scores that set its offset"
    if not held_out and hasattr(det, "clean_scores_"):
        return "clean scores of a tree without contamination (which scores nothing held out)"
    if hasattr(det, "clean_scores_"):
        cs = np.asarray(det.clean_scores_)
        if cs.ndim != 1 or cs.dtype.kind != "f" or not len(cs) or not np.isfinite(cs).all() or (abs(cs) > 1).any():
            return f"clean scores {cs.dtype}{cs.shape}"
        if n_fit is not None and (len(cs) > n_fit or det.classifier == "tree" and len(cs) != n_fit):
            return f"{len(cs)} clean scores of {n_fit} fit samples"  # a tree scores each by cross-validation
        if c is not None and det.offset_ != float(np.quantile(cs, c)):
            return f"offset {det.offset_!r}, not the {c} quantile of its clean scores"
    n_features = int(np.prod(graph[det.layer_].synapse_shape))
    clf = det.classifier_
    for est in getattr(clf, "estimators_", [clf]):
        problem = tree_problem(est, n_features, graph.num_outputs)
        if problem:
            return f"classifier: {problem}"
    return None


# --------------------------------------------------------------------------- detectors, in a subprocess
def score_in_subprocess(model_path, x_path, files, timeout=600):
    """Load and score each detector file in a separate Python (restarted after a crash); returns
    ``{file: None (ran or refused cleanly) or what went wrong}``."""
    results, todo = {}, list(files)
    while todo:
        command = [sys.executable, os.path.abspath(__file__), "score-detectors", model_path, x_path, *todo]
        proc = subprocess.run(command,
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        started = None
        for line in proc.stdout.splitlines():
            word, _, rest = line.partition(" ")
            if word == "START":
                started = todo[int(rest)]
            elif word in ("OK", "REFUSED", "ERROR"):
                i, _, message = rest.partition(" ")
                results[todo[int(i)]] = message if word == "ERROR" else None
                started = None
        if proc.returncode == 0:
            return results
        if started is None:  # died before the first file, or between files
            raise RuntimeError(f"the detector worker failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        results[started] = f"the process died scoring it (exit status {proc.returncode})"
        todo = todo[todo.index(started) + 1:]
    return results


def _worker(model_path, x_path, files):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from analyses.adversarial import load_detector
    from nnslicer.errors import NNSlicerError

    model = keras.models.load_model(model_path)
    x = np.load(x_path)
    for i, path in enumerate(files):
        print("START", i, flush=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                det = load_detector(path, model)
                det.detect(x)
        except NNSlicerError as exc:
            print("REFUSED", i, type(exc).__name__, flush=True)
        except Exception as exc:  # noqa: BLE001
            print("ERROR", i, _exc(exc).replace("\n", " "), flush=True)
        else:
            print("OK", i, flush=True)


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "score-detectors":
    _worker(sys.argv[2], sys.argv[3], sys.argv[4:])
