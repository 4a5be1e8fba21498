"""The command line: every subcommand on real files, and its error paths (exit code 2, a
message on stderr, nothing written)."""

import os

import keras
import numpy as np
import pytest

import nnslicer
from nnslicer.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(name="flat"),
                              keras.layers.Dense(4, activation="softmax", name="out")], name="tiny")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6, 6, 1)).astype("float32")
    y = model.predict(x, verbose=0).argmax(axis=1)
    paths = {"model": str(d / "m.keras"), "x": str(d / "x.npy"), "y": str(d / "y.npy"),
             "xz": str(d / "xy.npz"), "dir": d}
    model.save(paths["model"])
    np.save(paths["x"], x)
    np.save(paths["y"], y)
    np.savez(paths["xz"], x=x, y=y)
    return paths, model, x, y


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("info", "profile", "slice", "demo"):
        assert cmd in out
    assert "examples:" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_info(files, capsys):
    paths, *_ = files
    assert main(["info", paths["model"]]) == 0
    out = capsys.readouterr().out
    assert "conv/relu" in out and "fingerprint" in out and "'out'" in out


def test_profile_then_slice_matches_the_api(files, capsys, tmp_path):
    paths, model, x, y = files
    prof = str(tmp_path / "p.npz")
    assert main(["profile", paths["model"], "--data", paths["x"], "--labels", paths["y"], "-o", prof]) == 0
    loaded = nnslicer.Profile.load(prof)
    assert loaded.n_samples == 40 and loaded.class_means is not None
    np.save(tmp_path / "one.npy", x[3])
    out = str(tmp_path / "s.npz")
    assert main(["slice", paths["model"], "--profile", prof, "--input", str(tmp_path / "one.npy"),
                 "--target", "2", "--theta", "0.3", "-o", out, "--class-names", "cat,dog,bird,fish"]) == 0
    text = capsys.readouterr().out
    assert "total" in text and "sliced for output 2 (bird)" in text
    got = nnslicer.Slice.load(out)
    want = nnslicer.Slicer(keras.models.load_model(paths["model"]), theta=0.3).fit(x, y).slice(x[3], target=2)
    assert got == want


def test_slice_a_batch_from_npz_with_options(files, tmp_path):
    paths, model, x, y = files
    prof = str(tmp_path / "p.npz")
    assert main(["profile", paths["model"], "--data", paths["xz"], "--labels", paths["xz"], "-o", prof]) == 0
    out = str(tmp_path / "s.npz")
    assert main(["slice", paths["model"], "--profile", prof, "--input", paths["xz"], "--rule", "effective_path",
                 "--granularity", "channel", "--aggregate", "abs", "--baseline", "class", "-o", out]) == 0
    s = nnslicer.Slice.load(out)
    assert (s.samples, s.rule, s.granularity, s.aggregate, s.baseline, s.theta) == \
        (40, "effective_path", "channel", "abs", "class", 0.5)
    assert s.neuron_counts["conv"].shape == (3,)


@pytest.mark.parametrize("case, message", [
    ("missing_model", "No such model file"),
    ("bad_extension", ".keras or .h5"),
    ("corrupt_model", "is not a Keras model: a .keras file is a zip archive"),
    ("zip_not_a_model", "not a loadable Keras model"),
    ("missing_data", "No such data file"),
    ("wrong_shape", "shape"),
    ("nan", "NaN"),
    ("bad_target", "out of range"),
    ("target_text", "--target"),
    ("theta", "theta"),
    ("other_profile", "profile"),
])
def test_errors_exit_2_and_write_nothing(files, tmp_path, capsys, case, message):
    paths, model, x, y = files
    prof = str(tmp_path / "p.npz")
    assert main(["profile", paths["model"], "--data", paths["x"], "-o", prof]) == 0
    capsys.readouterr()
    out = tmp_path / "out.npz"
    model_path, inp = paths["model"], paths["x"]
    extra = []
    if case == "missing_model":
        model_path = str(tmp_path / "nope.keras")
    elif case == "bad_extension":
        model_path = paths["x"]
    elif case == "corrupt_model":
        model_path = str(tmp_path / "bad.keras")
        open(model_path, "wb").write(b"not a zip")
    elif case == "zip_not_a_model":
        import zipfile

        model_path = str(tmp_path / "zip.keras")
        with zipfile.ZipFile(model_path, "w") as z:
            z.writestr("hello.txt", "not a model")
    elif case == "missing_data":
        inp = str(tmp_path / "nope.npy")
    elif case == "wrong_shape":
        np.save(tmp_path / "w.npy", np.zeros((2, 5, 5, 1), np.float32))
        inp = str(tmp_path / "w.npy")
    elif case == "nan":
        bad = x[:2].copy()
        bad[0, 0, 0, 0] = np.nan
        np.save(tmp_path / "n.npy", bad)
        inp = str(tmp_path / "n.npy")
    elif case == "bad_target":
        extra = ["--target", "7"]
    elif case == "target_text":
        extra = ["--target", "two"]
    elif case == "theta":
        extra = ["--theta", "1.5"]
    elif case == "other_profile":
        keras.utils.set_random_seed(2)
        other = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
                                  keras.layers.Flatten(name="flat"),
                                  keras.layers.Dense(4, activation="softmax", name="out")], name="tiny")
        other_path = str(tmp_path / "other.keras")
        other.save(other_path)
        model_path = other_path
    code = main(["slice", model_path, "--profile", prof, "--input", inp, "-o", str(out)] + extra)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".nnslicer-")]


def test_demo_trains_once_then_reuses_its_cache(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--samples", "12"]) == 0
    first = capsys.readouterr().out
    assert "trained" in first and "test accuracy" in first and "conv1" in first
    accuracy = float(first.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 90
    s = nnslicer.Slice.load(out / "slice.npz")
    assert s.model == "small_cnn" and s.n_synapses > 0
    assert main(["demo", "--out", str(out), "--samples", "12"]) == 0
    second = capsys.readouterr().out
    assert "cached" in second
    assert nnslicer.Slice.load(out / "slice.npz") == s


def test_slice_on_ray_workers_equals_serial(files, tmp_path):
    paths, model, x, y = files
    prof = str(tmp_path / "p.npz")
    assert main(["profile", paths["model"], "--data", paths["x"], "-o", prof]) == 0
    serial, parallel = str(tmp_path / "s.npz"), str(tmp_path / "r.npz")
    assert main(["slice", paths["model"], "--profile", prof, "--input", paths["x"], "-o", serial]) == 0
    assert main(["slice", paths["model"], "--profile", prof, "--input", paths["x"], "--workers", "2",
                 "-o", parallel]) == 0
    assert nnslicer.Slice.load(serial) == nnslicer.Slice.load(parallel)


def test_h5_models_load_too(files, tmp_path, capsys):
    paths, model, x, y = files
    h5 = str(tmp_path / "m.h5")
    model.save(h5)
    assert main(["info", h5]) == 0
    assert "conv/relu" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("output_is_a_directory", "is a directory"),
    ("output_in_missing_directory", "No such directory"),
    ("model_output_not_keras", "-o takes a .keras or .h5 file"),
    ("secret_in_missing_directory", "No such directory"),
    ("secret_on_the_model_output", "-o and --secret name the same file"),
    ("picture_format_disagrees", "make them agree"),
    ("read_only_directory", "Cannot write in"),
    ("secret_exists", "a secret is never overwritten"),
    ("slice_output_not_npz", "-o takes a .npz file"),
    ("profile_output_not_npz", "-o takes a .npz file"),
    ("detector_output_not_nnsd", "-o takes a .nnsd file"),
    ("secret_not_npz", "--secret takes a .npz file"),
])
def test_outputs_are_checked_before_any_work(files, tmp_path, capsys, monkeypatch, case, message):
    """A bad output path fails at once, with nothing written (no protected model without its
    secret, above all)."""
    paths, model, x, y = files
    cls = str(int(y[0]))
    protect = ["protect", paths["model"], "--data", paths["x"], "--labels", paths["y"], "--classes", cls]
    prof = str(tmp_path / "p.npz")
    argv = {
        "output_is_a_directory": ["profile", paths["model"], "--data", paths["x"], "-o", str(tmp_path / "out.npz")],
        "output_in_missing_directory": ["profile", paths["model"], "--data", paths["x"],
                                        "-o", str(tmp_path / "no" / "p.npz")],
        "model_output_not_keras": protect + ["-o", prof, "--secret", str(tmp_path / "s.npz")],
        "secret_in_missing_directory": protect + ["-o", str(tmp_path / "m.keras"),
                                                  "--secret", str(tmp_path / "no" / "s.npz")],
        # the extensions differ, so only a link can make them one file
        "secret_on_the_model_output": protect + ["-o", str(tmp_path / "m.keras"), "--secret", str(tmp_path / "s.npz")],
        "picture_format_disagrees": ["render", paths["model"], "--format", "png", "-o", str(tmp_path / "g.svg")],
        "read_only_directory": protect + ["-o", str(tmp_path / "m.keras"), "--secret", str(tmp_path / "s.npz")],
        "secret_exists": protect + ["-o", str(tmp_path / "m.keras"), "--secret", str(tmp_path / "old.npz")],
        "slice_output_not_npz": ["slice", paths["model"], "--profile", paths["x"], "--input", paths["x"],
                                 "-o", str(tmp_path / "s1.svg")],
        "profile_output_not_npz": ["profile", paths["model"], "--data", paths["x"], "-o", str(tmp_path / "p.json")],
        "detector_output_not_nnsd": ["detect", "fit", paths["model"], "--data", paths["x"],
                                     "-o", str(tmp_path / "d.npz")],
        "secret_not_npz": protect + ["-o", str(tmp_path / "m.keras"), "--secret", str(tmp_path / "s.json")],
    }[case]
    if case == "read_only_directory":  # root may write anywhere: stand in for a read-only file system
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if p == str(tmp_path) else real(p, mode))
    if case == "secret_exists":
        (tmp_path / "old.npz").write_bytes(b"the only copy")
    if case == "output_is_a_directory":
        (tmp_path / "out.npz").mkdir()
    if case == "secret_on_the_model_output":
        os.symlink(tmp_path / "m.keras", tmp_path / "s.npz")
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == {"secret_exists": ["old.npz"], "output_is_a_directory": ["out.npz"],
                                      "secret_on_the_model_output": ["s.npz"]}.get(case, [])
    if case == "secret_exists":
        assert (tmp_path / "old.npz").read_bytes() == b"the only copy"


@pytest.mark.parametrize("command", ["slice", "profile", "detect"])
def test_nnslicer_files_are_refused_as_data(files, tmp_path, capsys, command):
    """A slice or profile file given where inputs go is refused, not read as an image."""
    paths, model, x, y = files
    prof = str(tmp_path / "p.npz")
    assert main(["profile", paths["model"], "--data", paths["x"], "-o", prof]) == 0
    argv = {"slice": ["slice", paths["model"], "--profile", prof, "--input", prof, "-o", str(tmp_path / "s.npz")],
            "profile": ["profile", paths["model"], "--data", prof, "-o", str(tmp_path / "q.npz")],
            "detect": ["detect", "fit", paths["model"], "--data", prof, "-o", str(tmp_path / "d.nnsd")]}[command]
    capsys.readouterr()
    assert main(argv) == 2
    assert "is an nnslicer profile file, not data" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["p.npz"]


def test_protect_leaves_no_secret_when_the_model_cannot_be_written(files, tmp_path, capsys, monkeypatch):
    import analyses.cli.protect

    paths, model, x, y = files

    def full_disk(model, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(analyses.cli.protect, "save_model", full_disk)
    assert main(["protect", paths["model"], "--data", paths["x"], "--labels", paths["y"], "--classes", str(int(y[0])),
                 "-o", str(tmp_path / "m.keras"), "--secret", str(tmp_path / "s.npz")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_model_outputs_load_back_in_the_format_named(files, tmp_path):
    """-o x.h5 writes HDF5 (not a .keras zip under another name) and loads back."""
    paths, model, x, y = files
    out = tmp_path / "p.h5"
    assert main(["prune", paths["model"], "--data", paths["x"], "--labels", paths["y"], "--classes", str(int(y[0])),
                 "--ratio", "0.5", "--method", "magnitude", "-o", str(out)]) == 0
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89HDF\r\n\x1a\n"
    assert keras.models.load_model(out, compile=False).count_params() == model.count_params()


@pytest.mark.parametrize("labels, argv, message", [
    (np.array(["a"] * 40), [], "labels must be integer class indices; got an array of <U1"),
    (np.zeros((40, 1, 1), int), [], "got shape (40, 1, 1)"),
    (np.full(40, 0.5), [], "non-integral"),
    (np.full(40, 9), [], "labels outside [0, 4)"),
    (None, ["--batch-size", "0"], "'batch_size' parameter of profile must be a positive int. Got 0 instead. "
                                  "(option --batch-size)"),
])
def test_profile_refuses_bad_labels_and_batch_sizes(files, tmp_path, capsys, labels, argv, message):
    paths, *_ = files
    label_args = []
    if labels is not None:
        np.save(tmp_path / "y.npy", labels)
        label_args = ["--labels", str(tmp_path / "y.npy")]
    out = tmp_path / "p.npz"
    assert main(["profile", paths["model"], "--data", paths["x"], *label_args, *argv, "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_profile_takes_column_and_one_hot_labels(files, tmp_path):
    paths, model, x, y = files
    want = nnslicer.Slicer(model).fit(x, y).profile_
    for i, labels in enumerate((y[:, None], np.eye(4)[y])):
        np.save(tmp_path / f"y{i}.npy", labels)
        out = tmp_path / f"p{i}.npz"
        assert main(["profile", paths["model"], "--data", paths["x"], "--labels", str(tmp_path / f"y{i}.npy"),
                     "-o", str(out)]) == 0
        got = nnslicer.Profile.load(out)
        np.testing.assert_array_equal(got.class_counts, want.class_counts)


@pytest.mark.parametrize("argv, message", [
    (["slice", "{model}", "--profile", "{prof}", "--input", "{x}", "--workers", "0", "-o", "{out}.npz"],
     "'n_jobs' parameter must be None or a positive int. Got 0 instead. (option --workers)"),
    (["compress", "{model}", "--data", "{x}", "--prune", "1.5", "--criterion", "uniform", "-o", "{out}.keras"],
     "'rate' parameter of pruning_rates must be a float in [0, 1). Got 1.5 instead. (option --prune)"),
    (["compress", "{model}", "--data", "{x}", "-o", "{out}.keras"], "(--prune R, --bits B)"),
    (["compress", "{model}", "--data", "{x}", "--prune", "0", "-o", "{out}.keras"], "(--prune R, --bits B)"),
    (["prune", "{model}", "--data", "{x}", "--labels", "{y}", "--classes", "0,,1", "--ratio", "0.5", "-o", "{out}.keras"],
     "--classes takes comma-separated class indices, e.g. 0,1,5; got '0,,1'"),
    (["protect", "{model}", "--data", "{x}", "--labels", "{y}", "--classes", "1,1", "-o", "{out}.keras", "--secret",
      "{out}.npz"], "--classes names a class twice: '1,1'"),
    (["compare", "{model}", "{model}", "--data", "{x}", "--labels", "{y}", "--classes", "", "-o", "{out}.html"],
     "--classes takes comma-separated class indices"),
    (["render", "{model}", "--view", "diff", "-o", "{out}.svg"], "--view diff draws slices: give a slice file"),
    (["render", "{model}", "--view", "neuron", "--max-nodes", "5", "-o", "{out}.svg"], "over the limit of 5"),
])
def test_misuse_names_the_option_to_fix(files, tmp_path, capsys, argv, message):
    """Misused options are refused before any work, and a message about a Python parameter
    names the option the command line sets it with."""
    paths, *_ = files
    prof = str(tmp_path / "p.npz")
    assert main(["profile", paths["model"], "--data", paths["x"], "-o", prof]) == 0
    capsys.readouterr()
    names = {"model": paths["model"], "x": paths["x"], "y": paths["y"], "prof": prof, "out": str(tmp_path / "out")}
    assert main([a.format(**names) for a in argv]) == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["p.npz"]


def test_quiet_turns_progress_bars_off(files, tmp_path, monkeypatch):
    """On a terminal a bar with a rate is drawn; after ``nnslicer -q`` none is."""
    import io
    import sys

    from nnslicer.cli import options

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def drawn():
        monkeypatch.setattr(sys, "stderr", Terminal())
        with options.progress(10, "slicing") as update:
            update(5)
        return sys.stderr.getvalue()

    paths, *_ = files
    monkeypatch.setattr(options, "QUIET", False)
    assert "slicing" in drawn() and "sample/s" in drawn()
    assert main(["-q", "profile", paths["model"], "--data", paths["x"], "-o", str(tmp_path / "p.npz")]) == 0
    assert options.QUIET and drawn() == ""
