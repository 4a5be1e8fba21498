"""Serial equals parallel: the backward analysis on Ray workers gives exactly the serial
slices, in order, also when a worker dies mid-run."""

import os

import keras
import numpy as np
import pytest

import nnslicer
from nnslicer.errors import InvalidParameterError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    b = keras.layers.Conv2D(4, 1, name="c2")(a)
    h = keras.layers.Add(name="add")([a, b])
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(5, activation="softmax", name="out")(h)
    model = keras.Model(inp, out, name="resnetish")
    x = np.random.default_rng(0).normal(size=(60, 8, 8, 1)).astype("float32")
    slicer = nnslicer.Slicer(model, batch_size=16).fit(x)
    serial = slicer.slice_many(x)
    yield slicer, x, serial
    if ray.is_initialized():
        ray.shutdown()


def test_slice_many_on_ray_equals_serial(setup):
    slicer, x, serial = setup
    seen = []
    parallel = slicer.slice_many(x, n_jobs=2, progress=seen.append)
    assert len(parallel) == len(serial) == 60
    assert all(p == s for p, s in zip(parallel, serial))
    assert seen[-1] == 60 and seen == sorted(seen)
    assert sum(s.n_synapses for s in parallel) > 0


@pytest.mark.parametrize("how", ["sum", "abs"])
def test_aggregated_slice_on_ray_equals_serial(setup, how):
    slicer, x, serial = setup
    assert slicer.slice(x, aggregate=how, n_jobs=2) == slicer.slice(x, aggregate=how)
    assert slicer.slice(x, aggregate=how, n_jobs=2) == nnslicer.aggregate(serial, how)


def test_a_dead_worker_is_retried_and_no_sample_is_lost_or_doubled(setup, tmp_path):
    slicer, x, serial = setup
    marker = tmp_path / "died"
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"NNSLICER_FAULT_ONCE": str(marker)}})
    try:
        parallel = slicer.slice_many(x, n_jobs=2)
        total = slicer.slice(x, aggregate="abs", n_jobs=2)
    finally:
        ray.shutdown()
    assert marker.exists()  # a worker really died
    assert len(parallel) == 60 and all(p == s for p, s in zip(parallel, serial))
    assert total == nnslicer.aggregate(serial, "abs")
    assert total.samples == 60


@pytest.mark.parametrize("n_jobs", [0, -1, 1.5, True, "2"])
def test_bad_n_jobs(setup, n_jobs):
    slicer, x, _ = setup
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        slicer.slice_many(x[:2], n_jobs=n_jobs)


def test_ray_is_not_started_for_serial_work(setup):
    slicer, x, serial = setup
    if ray.is_initialized():
        ray.shutdown()
    env = os.environ.pop("RAY_ADDRESS", None)
    try:
        assert slicer.slice_many(x[:3], n_jobs=1)[0] == serial[0]
        assert not ray.is_initialized()
    finally:
        if env is not None:
            os.environ["RAY_ADDRESS"] = env


def test_an_address_where_nothing_listens_fails_at_once(setup):
    """Ray would retry a dead address for minutes; nnslicer refuses it after one connect,
    before Ray is started."""
    import socket

    slicer, x, _ = setup
    if ray.is_initialized():
        ray.shutdown()
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(InvalidParameterError, match=f"No Ray cluster answers at '127.0.0.1:{port}' .*address out"):
        slicer.slice_many(x[:2], address=f"127.0.0.1:{port}")
    assert not ray.is_initialized()


def test_a_dead_address_from_the_environment_is_named_as_such(setup, monkeypatch):
    import socket

    slicer, x, _ = setup
    if ray.is_initialized():
        ray.shutdown()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(InvalidParameterError, match="from the RAY_ADDRESS environment variable.*unset RAY_ADDRESS"):
        slicer.slice_many(x[:2])
    assert not ray.is_initialized()


@pytest.mark.slow
def test_an_existing_cluster_by_address(setup):
    """`ray start --head`, then address=...: the slices equal the serial ones."""
    import shutil
    import socket
    import subprocess
    import tempfile

    slicer, x, serial = setup
    if ray.is_initialized():
        ray.shutdown()
    exe = shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command is not on PATH")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, RAY_ADDRESS="", RAY_AUTH_MODE="disabled")
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay short
    subprocess.run([exe, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1", f"--temp-dir={short}"], check=True, env=env,
                   capture_output=True, timeout=120)
    try:
        got = slicer.slice_many(x, address=f"127.0.0.1:{port}")
        assert ray.is_initialized()
        assert all(a == b for a, b in zip(got, serial)) and len(got) == len(serial)
    finally:
        ray.shutdown()
        subprocess.run([exe, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.parametrize("op", ["c1", "c2", "out"])
def test_synapse_counts_on_ray_equal_full_slices(setup, op):
    """The partial analysis down to one op gives that op's counts of the full slices, on Ray too."""
    slicer, x, serial = setup
    want = np.stack([s.synapse_counts[op] for s in serial])
    np.testing.assert_array_equal(slicer.synapse_counts(x, op), want)
    np.testing.assert_array_equal(slicer.synapse_counts(x, op, n_jobs=2), want)
