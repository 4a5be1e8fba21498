"""Raw access to nnslicer's archive files (nnslicer/io.py), for tests that damage or craft them.

A file is a header (JSON: format, version, meta, names, digest) and arrays ``a0, a1, ...`` named
by ``names``. :func:`write_raw` signs what it writes with the digest that nnslicer checks, as a
crafted file would be, so that a test reaches the validation behind the digest.
"""

import json

import numpy as np

from nnslicer.io import _digest


def read_raw(path):
    """``(header, arrays)`` of an archive: the header dict and name -> array."""
    with np.load(path, allow_pickle=False) as f:
        header = json.loads(bytes(f["header"]).decode())
        return header, {name: f[f"a{i}"] for i, name in enumerate(header["names"])}


def write_raw(path, header, arrays, sign=True):
    """Write ``header`` and ``arrays`` (name -> array) as an archive; its names are the arrays'
    keys, and with ``sign`` its digest is made to fit (else the header's is kept)."""
    header = dict(header, names=list(arrays))
    if sign:
        header["digest"] = _digest(header.get("meta"), list(arrays), [np.asarray(a) for a in arrays.values()])
    payload = {f"a{i}": np.asarray(a) for i, a in enumerate(arrays.values())}
    payload["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **payload)
    return str(path)
