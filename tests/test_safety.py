"""Nothing destroyed, nothing crashes (issue 16): what nnslicer writes over, the files it reads
back, values that would silently change a slice, and failures the command line reports."""

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import nnslicer
from nnslicer import FileFormatError, InvalidInputError
from nnslicer.cli import main
from nnslicer.io import atomic_path, save_archive

from archives import read_raw, write_raw
from tiny import self_labelled, tiny_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model, its data, a profile and a slice, on disk."""
    d = tmp_path_factory.mktemp("safety")
    model = tiny_cnn(3, n_classes=4)
    x, y = self_labelled(model, 30, seed=3)
    paths = {"model": str(d / "m.keras"), "x": str(d / "x.npy"), "xz": str(d / "x.npz"),
             "profile": str(d / "p.npz"), "slice": str(d / "s.npz")}
    model.save(paths["model"])
    np.save(paths["x"], x[:2])
    np.savez(paths["xz"], x=x[:2])
    slicer = nnslicer.Slicer(model).fit(x, y)
    slicer.profile_.save(paths["profile"])
    slicer.slice(x[0]).save(paths["slice"])
    return paths, model, slicer, x, y


def slice_to(paths, output):
    return main(["slice", paths["model"], "--profile", paths["profile"], "--input", paths["x"], "-o", output])


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- 1. what gets replaced
def test_a_device_is_never_replaced(files, tmp_path, capsys):
    """Run as root, the atomic write used to replace /dev/full with a regular file. The test
    makes its own "full" device node, so that a regression cannot break the machine's."""
    paths, *_ = files
    device = str(tmp_path / "full.npz")
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("making a device node needs root")
    assert slice_to(paths, device) == 2
    assert "character device" in error_line(capsys)
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_fifos_and_sockets_are_never_replaced(files, tmp_path, capsys):
    paths, *_ = files
    fifo = str(tmp_path / "pipe.npz")
    os.mkfifo(fifo)
    assert slice_to(paths, fifo) == 2
    assert "FIFO" in error_line(capsys) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    sock_path = str(tmp_path / "sock.npz")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(sock_path)
        assert slice_to(paths, sock_path) == 2
        assert "socket" in error_line(capsys) and stat.S_ISSOCK(os.stat(sock_path).st_mode)


def test_a_symlink_is_written_through_to_its_target(files, tmp_path):
    """The link stays a link; its target is replaced atomically (and a dangling link's target
    is created)."""
    paths, *_ = files
    target, link = tmp_path / "real.npz", tmp_path / "link.npz"
    target.write_bytes(b"old")
    link.symlink_to(target)
    assert slice_to(paths, str(link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert nnslicer.Slice.load(target) == nnslicer.Slice.load(link)
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "new.npz")
    assert slice_to(paths, str(dangling)) == 0
    assert dangling.is_symlink() and (tmp_path / "new.npz").is_file()


def test_a_symlink_to_a_fifo_is_refused(files, tmp_path, capsys):
    paths, *_ = files
    fifo, link = str(tmp_path / "pipe"), tmp_path / "link.npz"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    assert slice_to(paths, str(link)) == 2
    assert "FIFO" in error_line(capsys)
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.timeout(120)
def test_reading_a_fifo_is_refused_instead_of_blocking(files, tmp_path, capsys):
    """Opening a FIFO for reading waits for a writer: every input is checked to be a regular
    file first."""
    paths, *_ = files
    out = str(tmp_path / "o.npz")
    for name, argv in (("m.keras", ["info", "{}"]), ("x.npy", ["slice", paths["model"], "--profile",
                                                               paths["profile"], "--input", "{}", "-o", out]),
                       ("p.npz", ["slice", paths["model"], "--profile", "{}", "--input", paths["x"], "-o", out])):
        fifo = str(tmp_path / name)
        os.mkfifo(fifo)
        assert main([a.format(fifo) if a == "{}" else a for a in argv]) == 2
        assert "FIFO" in error_line(capsys)


# --------------------------------------------------------------------------- 2. an output that is an input
def test_an_output_that_names_an_input_is_refused_before_any_work(files, tmp_path, capsys):
    """``slice -o p.npz`` used to replace the profile with a slice and exit 0."""
    paths, *_ = files
    before = open(paths["profile"], "rb").read()
    assert slice_to(paths, paths["profile"]) == 2
    assert "--profile" in error_line(capsys)
    hard, soft = str(tmp_path / "hard.npz"), str(tmp_path / "soft.npz")
    os.link(paths["profile"], hard)
    os.symlink(paths["profile"], soft)
    for alias in (hard, soft, os.path.relpath(paths["profile"])):
        assert slice_to(paths, alias) == 2
        assert "would destroy that input" in error_line(capsys)
    assert open(paths["profile"], "rb").read() == before


def test_detect_score_refuses_to_write_over_its_input(files, tmp_path, capsys):
    """``detect score ... --input x.npz -o x.npz`` used to replace the input with the verdicts;
    the check comes before the detector is even read."""
    paths, *_ = files
    detector = tmp_path / "d.nnsd"
    detector.write_bytes(b"not read")
    before = open(paths["xz"], "rb").read()
    assert main(["detect", "score", paths["model"], str(detector), "--input", paths["xz"], "-o", paths["xz"]]) == 2
    assert "--input" in error_line(capsys)
    assert open(paths["xz"], "rb").read() == before


def test_compare_refuses_a_figures_file_that_is_its_data(files, tmp_path, capsys):
    """``compare`` checks its two outputs itself (the JSON's default name comes from -o)."""
    paths, *_ = files
    before = open(paths["x"], "rb").read()
    assert main(["compare", paths["model"], paths["model"], "--data", paths["x"], "--labels", paths["x"],
                 "-o", str(tmp_path / "r.html"), "--json", paths["x"]]) == 2
    assert "--json takes a .json file" in error_line(capsys) and open(paths["x"], "rb").read() == before
    os.symlink(paths["x"], tmp_path / "figures.json")  # a .json name that is the data all the same
    assert main(["compare", paths["model"], paths["model"], "--data", paths["x"], "--labels", paths["x"],
                 "-o", str(tmp_path / "r.html"), "--json", str(tmp_path / "figures.json")]) == 2
    assert "--data" in error_line(capsys) and open(paths["x"], "rb").read() == before


def test_every_command_knows_its_input_files():
    """Each subcommand's free-string arguments are checked as possible inputs; none of its
    outputs is among them."""
    from nnslicer.cli import build_parser

    args = build_parser().parse_args(["slice", "m.keras", "--profile", "p", "--input", "x", "-o", "s"])
    assert {"model", "--profile", "--input", "--target"} <= set(args.paths.values())
    assert "output" in args.paths  # outputs are skipped by what they name, not left out here


# --------------------------------------------------------------------------- 4. one line and exit 2
def test_an_unexpected_failure_is_one_line_unless_verbose(files, monkeypatch, capsys, tmp_path):
    import nnslicer.cli.slicing as slicing

    def broken(args):
        raise RuntimeError("something nnslicer did not foresee")

    monkeypatch.setattr(slicing, "cmd_info", broken)
    paths, *_ = files
    assert main(["info", paths["model"]]) == 2
    err = error_line(capsys)
    assert "RuntimeError: something nnslicer did not foresee" in err and "-v" in err
    with pytest.raises(RuntimeError):
        main(["-v", "info", paths["model"]])


# --------------------------------------------------------------------------- 5. silently wrong numbers
@pytest.mark.parametrize("damage", ["nan", "inf", "int8", "bool", "complex"])
def test_profiles_with_non_finite_or_non_float_means_are_refused(files, tmp_path, damage):
    """An int8 profile used to change 50 of 50 slices, one NaN 3 of 50."""
    paths, *_ = files
    header, arrays = read_raw(paths["profile"])
    name = next(k for k in arrays if k.startswith("mean/"))
    value = arrays[name]
    arrays[name] = {"nan": np.where(np.arange(value.size).reshape(value.shape) == 0, np.nan, value),
                    "inf": np.full_like(value, np.inf), "int8": value.astype(np.int8),
                    "bool": value > 0, "complex": value.astype(np.complex64)}[damage]
    bad = write_raw(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(FileFormatError, match="NaN or inf" if damage in ("nan", "inf") else "not of floats"):
        nnslicer.Profile.load(bad)


@pytest.mark.parametrize("kind, edit, message", [
    ("profile", lambda m: m.update(n_samples="abc"), "n_samples"),
    ("profile", lambda m: m.update(n_samples=0), "0 samples"),
    ("profile", lambda m: m.update(model=["x"]), "'model'"),
    ("profile", lambda m: m.pop("fingerprint"), "fingerprint"),
    ("slice", lambda m: m.update(theta="x"), "'theta'"),
    ("slice", lambda m: m.update(theta=5), "'theta'"),
    ("slice", lambda m: m.update(rule="bogus"), "'rule'"),
    ("slice", lambda m: m.update(granularity=["element"]), "'granularity'"),
    ("slice", lambda m: m.update(samples=1.5), "'samples'"),
    ("slice", lambda m: m.update(targets=[-1]), "'targets'"),
    ("slice", lambda m: m.update(model=3), "'model'"),
    ("slice", lambda m: m.update(theta=float("nan")), "NaN or infinity at meta\\['theta'\\]"),
])
def test_metadata_is_checked(files, tmp_path, kind, edit, message):
    """theta="x" used to break a slice's repr, theta=5 and rule="bogus" to load; a profile's
    n_samples="abc" gave a traceback."""
    paths, *_ = files
    header, arrays = read_raw(paths[kind])
    edit(header["meta"])
    with pytest.raises(FileFormatError, match=message):
        {"profile": nnslicer.Profile, "slice": nnslicer.Slice}[kind].load(write_raw(tmp_path / "bad.npz", header,
                                                                                     arrays))


def test_class_means_must_fit_the_means(files, tmp_path):
    paths, *_ = files
    header, arrays = read_raw(paths["profile"])
    arrays["class_counts"] = arrays["class_counts"] + 1000
    with pytest.raises(FileFormatError, match="class counts"):
        nnslicer.Profile.load(write_raw(tmp_path / "bad.npz", header, arrays))
    header, arrays = read_raw(paths["profile"])
    name = next(k for k in arrays if k.startswith("class_mean/"))
    arrays[name] = arrays[name][:-1]
    with pytest.raises(FileFormatError, match="class mean of"):
        nnslicer.Profile.load(write_raw(tmp_path / "bad.npz", header, arrays))


def test_an_edited_file_fails_its_digest(files, tmp_path):
    """A change that a validator could not see (a count moved from one neuron to another) is
    caught by the digest that every file carries."""
    paths, *_ = files
    header, arrays = read_raw(paths["slice"])
    name = next(k for k, v in arrays.items() if k.startswith("n/") and v.any())
    arrays[name] = np.roll(arrays[name], 1)
    with pytest.raises(FileFormatError, match="does not match its digest"):
        nnslicer.Slice.load(write_raw(tmp_path / "bad.npz", header, arrays, sign=False))


def test_version_1_files_without_a_digest_still_load(files, tmp_path):
    paths, *_ = files
    header, arrays = read_raw(paths["slice"])
    header["version"] = 1
    del header["digest"]
    assert nnslicer.Slice.load(write_raw(tmp_path / "v1.npz", header, arrays, sign=False)) == \
        nnslicer.Slice.load(paths["slice"])


def test_an_input_that_overflows_the_model_is_refused(files):
    """3e38 used to give inf activations and a one-neuron slice with only a RuntimeWarning."""
    _, model, slicer, x, _ = files
    kernel = model.get_layer("conv").get_weights()[0][:, :, 0, 0]  # the first filter, 3x3
    assert float(np.abs(kernel).sum()) * 3e38 > float(np.finfo(np.float32).max)  # its first output overflows:
    big = np.zeros_like(x[0])
    big[:3, :3, 0] = 3e38 * np.sign(kernel)
    with pytest.raises(InvalidInputError, match=r"op 'conv' are NaN or inf"):
        slicer.slice(big)


def test_a_model_with_a_nan_weight_is_refused_at_profiling_and_slicing(files):
    paths, model, slicer, x, y = files
    broken = keras.models.clone_model(model)
    weights = [w.copy() for w in model.get_weights()]
    weights[2][0, 0] = np.nan  # the dense kernel
    broken.set_weights(weights)
    with pytest.raises(InvalidInputError, match=r"op 'dense"):
        nnslicer.Slicer(broken).fit(x, y)
    with pytest.raises(InvalidInputError, match=r"op 'dense"):
        nnslicer.Slicer(broken).fit(profile=_profile_for(broken, slicer.profile_)).slice(x[0])


def _profile_for(model, profile):
    """``profile``'s means under ``model``'s fingerprint (same architecture)."""
    graph = nnslicer.lift(model)
    return nnslicer.Profile(profile.means, profile.n_samples, graph.name, graph.fingerprint)


# --------------------------------------------------------------------------- 6. slice files
@pytest.fixture
def misshapen_slice(files, tmp_path):
    """The slice file with the dense layer's synapse counts transposed."""
    paths, *_ = files
    header, arrays = read_raw(paths["slice"])
    arrays["s/dense"] = arrays["s/dense"].T.copy()
    return write_raw(tmp_path / "misshapen.npz", header, arrays)


def test_misshapen_counts_are_refused_against_the_model(files, misshapen_slice, tmp_path, capsys):
    """It used to render with exit 0, and make jaccard raise a broadcasting error."""
    paths, model, slicer, *_ = files
    with pytest.raises(FileFormatError, match=r"synapse counts of 'dense'.*shaped"):
        nnslicer.Slice.load(misshapen_slice, graph=slicer.graph_)
    assert main(["render", misshapen_slice, "--model", paths["model"], "-o", str(tmp_path / "s.svg")]) == 2
    assert "'dense'" in error_line(capsys) and not (tmp_path / "s.svg").exists()
    with pytest.raises(nnslicer.InvalidParameterError, match="different shapes"):
        nnslicer.Slice.load(misshapen_slice).jaccard(nnslicer.Slice.load(paths["slice"]))


def test_a_loaded_slice_keeps_the_graph_it_was_checked_against(files):
    paths, _, slicer, *_ = files
    loaded = nnslicer.Slice.load(paths["slice"], graph=slicer.graph_)
    assert loaded.graph is not None and loaded.to_networkx().number_of_nodes() > 0


# --------------------------------------------------------------------------- 7. leftovers
def leftovers(folder):
    return [f for f in os.listdir(folder) if f.startswith(".nnslicer-")]


def test_a_failed_write_leaves_nothing_and_the_old_file_intact(tmp_path):
    path = tmp_path / "out.npz"
    path.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError), atomic_path(path, ".npz") as tmp:
        open(tmp, "wb").write(b"half")
        1 / 0
    assert path.read_bytes() == b"old" and not leftovers(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_write_leaves_nothing(tmp_path, sig):
    """A process stopped with SIGTERM or Ctrl-C while writing used to leave its hidden
    temporary file behind."""
    script = textwrap.dedent(f"""
        import os, signal
        from nnslicer.io import atomic_path
        # a process started in the background by a shell inherits Ctrl-C ignored: undo that
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with atomic_path({str(tmp_path / 'out.npz')!r}, ".npz") as tmp:
            open(tmp, "wb").write(b"half")
            os.kill(os.getpid(), {int(sig)})
            signal.pause()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode != 0
    assert not leftovers(tmp_path) and not (tmp_path / "out.npz").exists()


def test_writes_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    save_archive(tmp_path / "a.npz", "test", {}, {"x": np.zeros(2)})
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".nnslicer-")) and synced[1] == str(tmp_path)


def test_an_existing_files_mode_is_kept(tmp_path):
    path = tmp_path / "a.npz"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    save_archive(path, "test", {}, {"x": np.zeros(2)})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


# --------------------------------------------------------------------------- 8. secrets
def test_a_secret_is_readable_by_its_owner_only(tmp_path):
    """The hidden weights used to be written 0644, and overwriting reset the mode."""
    from analyses.protection import ProtectionSecret

    secret = ProtectionSecret({"d/kernel": np.array([1])}, {"d/kernel": np.array([0.5], np.float32)},
                              {"d/kernel": [2, 2]}, "p", "o", {"model": "m", "method": "slice", "classes": [0]})
    path = tmp_path / "s.npz"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    secret.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ProtectionSecret.load(path) == secret


# --------------------------------------------------------------------------- 9. inputs
def test_complex_inputs_are_refused(files, tmp_path, capsys):
    paths, _, slicer, x, _ = files
    with pytest.raises(InvalidInputError, match="complex"):
        slicer.slice(x[0] + 1j)
    np.save(tmp_path / "c.npy", x[:2].astype(np.complex64))
    assert main(["slice", paths["model"], "--profile", paths["profile"], "--input", str(tmp_path / "c.npy"),
                 "-o", str(tmp_path / "s.npz")]) == 2
    assert "complex" in error_line(capsys)
    from nnslicer import check_inputs

    with pytest.raises(InvalidInputError, match="real numbers"):
        check_inputs(x.astype(np.complex64), (6, 6, 1))


def test_soft_label_rows_are_refused(files):
    """Probability rows of shape (n, classes) used to be taken as one-hot by argmax."""
    *_, x, y = files
    soft = np.full((len(y), 4), 0.1)
    soft[np.arange(len(y)), y] = 0.7
    with pytest.raises(InvalidInputError, match="soft labels"):
        nnslicer.Slicer(tiny_cnn(3, n_classes=4)).fit(x, soft)
    nnslicer.Slicer(tiny_cnn(3, n_classes=4)).fit(x, np.eye(4)[y])  # one-hot rows are still read
