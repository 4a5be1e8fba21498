"""Serial equals parallel: the backward analysis on Ray workers gives exactly the serial
slices, in order, also when a worker dies mid-run; and Ray's failures (a bad address, a refused
token, workers or a raylet lost for good) are one nnslicer error, one line from the CLI."""

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import pytest

import nnslicer
from nnslicer.cli import main
from nnslicer.errors import ExecutionError, InvalidParameterError
from nnslicer.parallel import use_ray

ray = pytest.importorskip("ray")

import ray_faults  # noqa: E402  (tests/: worker faults installed through the runtime environment)


def free_port():
    """A port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def own_ray(**kwargs):
    """A fresh local Ray runtime of the caller's own (nnslicer uses it as it is)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def clean_env(**extra):
    """This environment without Ray's settings (a local ray.init sets RAY_AUTH_MODE here)."""
    return dict({k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **extra)


@contextlib.contextmanager
def ray_head(**env):
    """A Ray head on 127.0.0.1 (`ray start --head --block`, a child of this test), its address;
    on exit, it and only it stops (`ray stop` would stop every Ray runtime of the machine)."""
    exe = shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command is not on PATH")
    port = free_port()
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay short
    log = os.path.join(short, "head.log")
    with open(log, "w") as out:
        head = subprocess.Popen([exe, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                                 "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={short}",
                                 "--disable-usage-stats"], env=clean_env(**env), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in open(log).read():
            assert head.poll() is None and time.monotonic() < deadline, open(log).read()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # the blocking `ray start` then stops every process of its head
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:  # pragma: no cover
            head.kill()
        shutil.rmtree(short, ignore_errors=True)


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


@pytest.fixture(scope="module")
def files(setup, tmp_path_factory):
    """The setup's model, profile and samples as the CLI's files."""
    slicer, x, _ = setup
    d = tmp_path_factory.mktemp("parallel")
    paths = {"model": str(d / "m.keras"), "profile": str(d / "p.npz"), "x": str(d / "x.npy")}
    slicer.model.save(paths["model"])
    slicer.profile_.save(paths["profile"])
    np.save(paths["x"], x)
    return paths


def cli_slice(files, out, *options):
    return main(["slice", files["model"], "--profile", files["profile"], "--input", files["x"], *options, "-o", out])


def one_error_line(capsys):
    """The CLI's stderr, checked to be one error line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnslicer slice: error: "), lines
    return lines[0]


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
    with own_ray(runtime_env=ray_faults.runtime_env(NNSLICER_TEST_FAULT_ONCE=str(marker))):
        parallel = slicer.slice_many(x, n_jobs=2)
        total = slicer.slice(x, aggregate="abs", n_jobs=2)
    assert marker.exists()  # a worker really died
    assert len(parallel) == 60 and all(p == s for p, s in zip(parallel, serial))
    assert total == nnslicer.aggregate(serial, "abs")
    assert total.samples == 60


def test_the_kernel_choice_reaches_the_workers(setup, monkeypatch):
    """The process's kernel choice is resolved when slicing and sent with each task, so that a
    worker (which never sees this process's settings) computes with the same kernels."""
    import nnslicer.ops.base as base
    import nnslicer.slicer as slicer_module

    slicer, x, serial = setup
    sent = []
    real = slicer_module.map_backward

    def spy(graph, chunks, params, *args, **kwargs):
        sent.append(params["kernels"])
        return real(graph, chunks, params, *args, **kwargs)

    monkeypatch.setattr(slicer_module, "map_backward", spy)
    monkeypatch.setattr(base, "KERNELS", "numpy")
    assert slicer.slice_many(x[:4], n_jobs=2) == serial[:4]
    assert sent == ["numpy"]


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
    slicer, x, _ = setup
    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    with pytest.raises(InvalidParameterError, match=f"No Ray cluster answers at '127.0.0.1:{port}' .*address out"):
        slicer.slice_many(x[:2], address=f"127.0.0.1:{port}")
    assert not ray.is_initialized()


def test_a_dead_address_from_the_environment_is_named_as_such(setup, monkeypatch):
    slicer, x, _ = setup
    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(InvalidParameterError, match="from the RAY_ADDRESS environment variable.*unset RAY_ADDRESS"):
        slicer.slice_many(x[:2])
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["foo", "127.0.0.1:abc", "127.0.0.1:", ":6379", "10.0.0.5:99999",
                                     "http://10.0.0.5:6379", "10.0.0.5:6379 ", 6379])
def test_an_address_ray_cannot_parse_is_refused_before_any_work(setup, address):
    slicer, x, _ = setup
    if ray.is_initialized():
        ray.shutdown()
    with pytest.raises(InvalidParameterError, match=r"The 'address' parameter must be a Ray cluster's HOST:PORT"):
        slicer.slice_many(x[:2], address=address)
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["10.0.0.5:6379", "head.example.org:6379", "[::1]:6379", "ray://10.0.0.5:10001",
                                     "auto", "local"])
def test_the_addresses_ray_takes_are_taken(address):
    assert use_ray(None, address)


@pytest.mark.parametrize("how", ["--ray-address", "RAY_ADDRESS"])
def test_a_bad_address_is_one_line_from_the_cli(setup, files, tmp_path, monkeypatch, capsys, how):
    if ray.is_initialized():
        ray.shutdown()
    out = tmp_path / "s.npz"
    if how == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", "foo")
        assert cli_slice(files, str(out)) == 2
        assert "The RAY_ADDRESS environment variable must be a Ray cluster's HOST:PORT" in one_error_line(capsys)
    else:
        assert cli_slice(files, str(out), "--ray-address", "127.0.0.1:abc") == 2
        assert "Got '127.0.0.1:abc' instead. (option --ray-address)" in one_error_line(capsys)
    assert not out.exists() and not ray.is_initialized()


def test_workers_that_keep_dying_are_one_nnslicer_error(setup):
    """Every try of the task kills its worker: after the retries, one error, not Ray's traceback."""
    slicer, x, _ = setup
    with own_ray(runtime_env=ray_faults.runtime_env(NNSLICER_TEST_FAULT_ALWAYS="1")):
        with pytest.raises(ExecutionError, match=r"after up to 3 retries .*WorkerCrashedError.*n_jobs=1"):
            slicer.slice_many(x[:1], n_jobs=2)


def test_a_cluster_with_token_authentication(setup, files, tmp_path, capsys):
    """The README's recipe on Ray 2.60: a head with token authentication; without the token, one
    line at once (not Ray's 20 s of retries); with RAY_AUTH_MODE=token and the head's token, the
    slice equals the serial one."""
    slicer, x, _ = setup
    if ray.is_initialized():
        ray.shutdown()
    token = secrets.token_hex(32)
    refused, out = tmp_path / "refused.npz", tmp_path / "cluster.npz"
    with ray_head(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token) as address:
        start = time.monotonic()
        assert cli_slice(files, str(refused), "--ray-address", address) == 2
        assert time.monotonic() - start < 10  # Ray alone retries for 20 s
        assert "token authentication failed" in one_error_line(capsys) and not refused.exists()
        assert not ray.is_initialized()
        run = subprocess.run([sys.executable, "-m", "nnslicer.cli", "slice", files["model"], "--profile",
                              files["profile"], "--input", files["x"], "--ray-address", address, "-o", str(out)],
                             env=clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token), capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
    assert nnslicer.Slice.load(out) == slicer.slice(x)


@pytest.mark.slow
def test_an_existing_cluster_by_address(setup):
    """`RAY_AUTH_MODE=disabled ray start --head`, then address=...: the slices equal the serial ones."""
    slicer, x, serial = setup
    if ray.is_initialized():
        ray.shutdown()
    with ray_head(RAY_AUTH_MODE="disabled") as address:
        try:
            got = slicer.slice_many(x, address=address)
            assert ray.is_initialized()
        finally:
            ray.shutdown()
    assert all(a == b for a, b in zip(got, serial)) and len(got) == len(serial)


@pytest.mark.parametrize("op", ["c1", "c2", "out"])
def test_synapse_counts_on_ray_equal_full_slices(setup, op):
    """The partial analysis down to one op gives that op's counts of the full slices, on Ray too."""
    slicer, x, serial = setup
    want = np.stack([s.synapse_counts[op] for s in serial])
    np.testing.assert_array_equal(slicer.synapse_counts(x, op), want)
    np.testing.assert_array_equal(slicer.synapse_counts(x, op, n_jobs=2), want)


def test_a_dead_raylet_is_one_nnslicer_error(setup, monkeypatch):
    """Ray's LocalRayletDiedError on a chunk's result: one error, not Ray's traceback. (Simulated:
    a raylet killed for real mid-run makes Ray end this whole process, exit code 1.)"""
    slicer, x, _ = setup

    def dead(*args, **kwargs):
        raise ray.exceptions.LocalRayletDiedError()

    monkeypatch.setattr(ray, "get", dead)
    with pytest.raises(ExecutionError, match="LocalRayletDiedError: The task's local raylet died"):
        slicer.slice_many(x[:4], n_jobs=2)
