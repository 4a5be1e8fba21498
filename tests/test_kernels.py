"""The numba kernels give exactly the numpy rules' masks (nnslicer.select is the specification)."""

import numpy as np
import pytest

pytest.importorskip("numba")

import numba  # noqa: E402

from nnslicer.backward import rule_kernels as K  # noqa: E402
from nnslicer.backward import rules as S  # noqa: E402
from nnslicer.errors import InvalidParameterError  # noqa: E402

THETA = {"nnslicer": 0.2, "paper": 0.2, "effective_path": 0.5}
LENGTHS = (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 64, 127, 128, 129, 255, 257, 576, 1000, 1153, 2304, 4608)


def _same(cand, rule, theta, y=None, bar=S.BAR):
    want = S.select(cand, rule, theta, y=y, bar=bar)
    got = K.select(cand, rule, theta, y=y, bar=bar)
    assert got.dtype == bool and got.shape == want.shape
    bad = np.flatnonzero((got != want).any(axis=1))
    assert bad.size == 0, f"{rule} theta={theta!r}: rows {bad[:5]} differ, e.g. {np.asarray(cand)[bad[0]]!r}"


def _matrix(rng, n, k):
    """Candidates of many kinds: gaussian, w*relu-delta, small integers (exact ties), wide range."""
    kind = rng.integers(0, 6)
    if kind == 0:
        c = rng.normal(size=(n, k))
    elif kind == 1:
        c = rng.normal(0, 0.05, (n, k)) * np.where(rng.random((n, k)) < 0.4, 0.0, rng.normal(size=(n, k)))
    elif kind == 2:
        c = rng.integers(-3, 4, size=(n, k)).astype(float)
    elif kind == 3:
        c = rng.normal(size=(n, k)) * 10.0 ** rng.integers(-12, 12, size=(n, k))
    elif kind == 4:
        c = rng.choice([-1.5, 1.5, 0.5, -0.5, 0.0, -0.0, 1e-17, 3.0, 0.1, 0.2, 0.3], size=(n, k))
    else:
        c = np.abs(rng.normal(size=(n, k))) * rng.choice([-1.0, 1.0], size=(n, k)) * rng.choice([1, 2], size=(n, k))
    c[rng.random((n, k)) < rng.choice([0.0, 0.05, 0.3, 0.9])] = np.nan
    return c


@pytest.mark.parametrize("seed", range(4))
def test_random_matrices(seed):
    rng = np.random.default_rng(seed)
    for k in LENGTHS:
        n = int(max(3, 50000 // k))
        c = _matrix(rng, n, k)
        y = rng.normal(size=n) * rng.choice([0.01, 1.0, 100.0])
        y[rng.random(n) < 0.1] = 0.0
        if rng.random() < 0.5:  # activations of the size of the sums: the paper rule's stop lands inside
            y = np.nansum(c, axis=1) + rng.normal(size=n)
        for rule in S.RULES:
            for theta in (THETA[rule], float(rng.uniform(0.01, 0.99))):
                _same(c, rule, theta, y=y)


def _boundary_thetas(value, scale):
    """theta exactly at a comparison's boundary, and one ulp either side."""
    if not scale > 0:
        return []
    t = value / scale
    return [x for x in (t, np.nextafter(t, 0.0), np.nextafter(t, 1.0)) if 0.0 < x < 1.0]


@pytest.mark.parametrize("seed", range(2))
def test_theta_on_the_boundary(seed):
    """theta makes a comparison an exact tie, so that one rounding of S or of a prefix sum,
    any other summation order, flips the mask (sequential S in place of numpy's pairwise
    sum fails this test)."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(150):
        k = int(rng.choice([9, 100, 129, 576, 1153, 4608]))
        c = rng.normal(size=(1, k)) * 10.0 ** rng.integers(-3, 3, size=(1, k))
        if rng.random() < 0.3:
            c = rng.integers(-3, 4, size=(1, k)) * rng.choice([1.0, 0.1, 1 / 3])
        c[rng.random(c.shape) < 0.2] = np.nan
        valid = ~np.isnan(c)
        if valid.sum() < 2:
            continue
        filled = np.where(valid, c, 0.0)
        total = filled.sum(axis=1)[0]
        j = int(rng.integers(0, valid.sum()))
        # nnslicer: |P_j - S| < theta * |S|
        order = np.argsort(np.where(valid, -np.abs(c), np.inf), axis=1, kind="stable")
        prefix = np.cumsum(np.take_along_axis(filled, order, axis=1), axis=1)[0]
        for theta in _boundary_thetas(abs(prefix[j] - total), abs(total)):
            _same(c, "nnslicer", theta)
        # paper: |Q_j| < theta * |y|
        order = np.argsort(np.where(valid, np.abs(c), np.inf), axis=1, kind="stable")
        prefix = np.cumsum(np.take_along_axis(filled, order, axis=1), axis=1)[0]
        y = np.array([rng.normal() * 10.0])
        for theta in _boundary_thetas(abs(prefix[j]), abs(y[0])):
            _same(c, "paper", theta, y=y)
        # effective_path: P_j >= theta * (sum of the positive ones)
        positive = np.where(c > 0, c, 0.0)
        if (c > 0).any():
            order = np.argsort(np.where(c > 0, -c, np.inf), axis=1, kind="stable")
            prefix = np.cumsum(np.take_along_axis(positive, order, axis=1), axis=1)[0]
            jp = int(rng.integers(0, (c > 0).sum()))
            for theta in _boundary_thetas(prefix[jp], positive.sum(axis=1)[0]):
                _same(c, "effective_path", theta)


def test_pairwise_totals_are_numpys():
    rng = np.random.default_rng(7)
    for k in LENGTHS + (8191, 8192, 8193, 20000):
        c = rng.normal(size=(3, k)) * 10.0 ** rng.integers(-8, 8, size=(3, k))
        c[rng.random(c.shape) < 0.1] = np.nan
        want = np.where(~np.isnan(c), c, 0.0).sum(axis=1)
        want_pos = np.where(~np.isnan(c) & (c > 0), c, 0.0).sum(axis=1)
        for r in range(3):
            assert K.row_total(c[r]) == want[r]
            assert K.row_positive_total(c[r]) == want_pos[r]


NAN = np.nan
SPECIAL_ROWS = [
    [NAN, NAN, NAN, NAN],  # all missing
    [NAN, 2.5, NAN, NAN],  # one valid candidate: kept whatever the rest
    [NAN, -0.0, NAN, NAN],
    [0.0, 0.0, -0.0, 0.0],  # all zero
    [1.0, -1.0, 2.0, -2.0],  # S == 0 exactly
    [3.0, -1.0, 0.5, 0.0],
    [1.0, 1.0, -1.0, -1.0, 1.0],  # ties in |c| of both signs
    [2.0, -2.0, 2.0, 1.0, -1.0, 1.0, 0.0, 0.0],
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # all tied
    [5.0, -4.9, 0.05, 0.05],  # |S| < min|c|
    [1000.0, -1000.0, 0.5, 0.1],  # |S| < 1e-3 max|c|
    [1e-300, -1e-300, 1e-310, 5e-324],  # denormals
    [1e300, 1e300, -1e300, 1.0],
    [np.inf, 1.0, -2.0, NAN],  # infinities
    [np.inf, -np.inf, 1.0, NAN],
    [-np.inf, 3.0, NAN, 0.0, NAN, 2.0],
    [NAN, np.inf, NAN, 1.0, 0.0, np.inf],
    [0.1, 0.2, 0.3, -0.6, 1e-17, -1e-17, NAN, 0.0],
    [1.0, 0.99, 0.995, 0.98, -0.5, 0.3],  # near-ties within bar
]


@pytest.mark.parametrize("row", SPECIAL_ROWS, ids=range(len(SPECIAL_ROWS)))
def test_special_rows(row):
    c = np.array([row])
    for rule in S.RULES:
        for theta in (THETA[rule], 1e-9, 0.5, 0.999999):
            for y in (0.0, 1.0, -3.0, 1e-9, NAN, np.inf):
                with np.errstate(all="ignore"):
                    _same(c, rule, theta, y=np.array([y]))
                    _same(c, rule, theta, y=np.array([y]), bar=0.3)
                if rule != "paper":
                    break


def test_nnslicer_bands_and_their_fallback():
    """rule="nnslicer" orders the largest candidates by bands of |c| (halvings of the largest)
    and takes the bucketed scan when a band is too large: rows that stop in the first band, in a
    later one, in the rest, or never; bands of ties, candidates on a band's bound, and a band
    too large, each against numpy."""
    rng = np.random.default_rng(12)
    k = 96
    rows = [rng.normal(size=k),  # stops in the first band
            rng.choice([-1.0, 1.0], k) * 2.0 ** -rng.uniform(0, 30, k),  # spread over 30 halvings
            rng.choice([-1.0, 1.0], k) * 2.0 ** -rng.integers(0, 6, k),  # on the bands' bounds, tied
            rng.choice([-1.0, 1.0], k),  # one band of k ties: too large, the bucketed scan
            np.r_[rng.normal(size=10) * 8.0, rng.choice([-1.0, 1.0], 86)]]  # a small band, then a large one
    for row in rows:
        for theta in (0.2, 0.05, 1e-3, 1e-9, 0.9):
            _same(np.array([row]), "nnslicer", theta)
            _same(np.array([row]), "nnslicer", theta, bar=0.3)


def test_effective_path_that_never_reaches_theta():
    """theta just below 1: the sequential prefix can stay below theta * (pairwise) total, and
    numpy then keeps only the largest candidate."""
    rng = np.random.default_rng(11)
    c = rng.random((2000, 300)) * 10.0 ** rng.integers(-6, 6, size=(2000, 300))
    theta = float(np.nextafter(1.0, 0.0))
    positive = np.where(c > 0, c, 0.0)
    order = np.argsort(-positive, axis=1, kind="stable")
    prefix = np.cumsum(np.take_along_axis(positive, order, axis=1), axis=1)
    never = ~(prefix >= theta * positive.sum(axis=1)[:, None]).any(axis=1)
    assert never.any()  # the case is exercised
    _same(c, "effective_path", theta)


def test_layouts_and_dtypes():
    rng = np.random.default_rng(3)
    c = _matrix(rng, 50, 576)
    c[:, ::7] = np.nan
    y = rng.normal(size=50)
    for variant in (np.asfortranarray(c), c[:, ::-1], c[::2], c[:, ::3], c.astype(np.float32), c.tolist()):
        for rule in S.RULES:
            _same(variant, rule, THETA[rule], y=y[: np.shape(variant)[0]])
    _same(c, "nnslicer", 0.2, bar=np.float32(0.01))
    _same(c, "nnslicer", np.float32(0.3))


def test_per_row_functions():
    rng = np.random.default_rng(5)
    for k in (1, 5, 129, 576):
        c = _matrix(rng, 20, k)
        y = rng.normal(size=20)
        want = {rule: S.select(c, rule, THETA[rule], y=y) for rule in S.RULES}
        out = np.empty(k, dtype=bool)
        for r in range(20):
            K.keep_nnslicer(c[r], 0.2, S.BAR, out)
            assert (out == want["nnslicer"][r]).all()
            K.keep_paper(c[r], 0.2, y[r], out)
            assert (out == want["paper"][r]).all()
            K.keep_effective_path(c[r], 0.5, out)
            assert (out == want["effective_path"][r]).all()


@numba.njit
def _rows_in_a_user_kernel(c, y, bar, out_n, out_p, out_e):
    ws = K.scratch(c.shape[1])
    for r in range(c.shape[0]):
        K.keep_nnslicer_into(c[r], 0.2, 1.0 - bar, K.row_total_into(c[r], ws), out_n[r], ws)
        K.keep_paper_into(c[r], 0.2, y[r], out_p[r], ws)
        K.keep_effective_path_into(c[r], 0.5, K.row_positive_total_into(c[r], ws), out_e[r], ws)


def test_into_functions_from_a_numba_kernel():
    rng = np.random.default_rng(6)
    for k in (1, 9, 17, 300, 1153):
        c = _matrix(rng, 40, k)
        y = np.nansum(c, axis=1) + rng.normal(size=40)
        got = [np.empty(c.shape, dtype=bool) for _ in range(3)]
        _rows_in_a_user_kernel(c, y, S.BAR, *got)
        for rule, mask in zip(S.RULES, got):
            assert (mask == S.select(c, rule, THETA[rule], y=y)).all()


def test_thread_count_does_not_matter():
    rng = np.random.default_rng(9)
    c = _matrix(rng, 3000, 64)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = {rule: K.select(c, rule, THETA[rule], y=c[:, 0]) for rule in S.RULES}
    finally:
        numba.set_num_threads(before)
    for rule in S.RULES:
        assert (K.select(c, rule, THETA[rule], y=c[:, 0]) == one[rule]).all()


def test_empty_and_errors():
    for shape in ((0, 5), (5, 0), (0, 0)):
        for rule in S.RULES:
            out = K.select(np.zeros(shape), rule, THETA[rule], y=np.zeros(shape[0]))
            assert out.shape == shape and out.dtype == bool
    with pytest.raises(InvalidParameterError):
        K.select(np.zeros(5))
    with pytest.raises(InvalidParameterError):
        K.select(np.zeros((2, 5)), "paper", 0.2)
    with pytest.raises(InvalidParameterError):
        K.select(np.zeros((2, 5)), "nope", 0.2)


def test_the_first_compilation_is_announced_only_without_a_cache(tmp_path, monkeypatch):
    """A machine without numba's cached kernels is told why the first slice is slow (the module
    warns when it is imported without them); one with them is not."""
    op_kernels = pytest.importorskip("nnslicer.backward.op_kernels")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    source = tmp_path / "src"
    (source / "__pycache__").mkdir(parents=True)
    assert not op_kernels.compiled_before(source_dir=str(source))
    (source / "__pycache__" / "op_kernels.window_backward-62.py311.nbi").write_bytes(b"")
    assert op_kernels.compiled_before(source_dir=str(source))
    cache = tmp_path / "cache"
    (cache / "nnslicer").mkdir(parents=True)
    assert not op_kernels.compiled_before(str(cache), source_dir=str(tmp_path))
    (cache / "nnslicer" / "op_kernels.window_backward-62.py311.nbi").write_bytes(b"")
    assert op_kernels.compiled_before(str(cache), source_dir=str(tmp_path))
