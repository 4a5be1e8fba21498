"""Fuzzing every file kind nnslicer writes (issue 16, "Beyond the list").

The originals are tiny real objects made once per module from one small Keras model
(``tiny.tiny_cnn``, 3 classes, 40 self-labelled inputs): a slice (``Slice.save``), a profile
(``Profile.save``), a detector (``SliceDetector.save``, a decision tree with ``contamination``,
``.nnsd``), a protection secret (``ProtectionSecret.save``) and a compression report
(``CompressionReport.save_json``). Each is saved, its bytes mutated, and the mutated file loaded.

Mutations (``tests/fuzzing.py``): bit flips, truncations and overwritten, inserted or deleted
bytes; header edits (a meta value anywhere in the JSON tree replaced by a string, list, dict, huge
or negative int, NaN, infinity, null, a bool or a neighbouring value; keys dropped or added;
``names`` shuffled, duplicated, dropped or extended; ``format``, ``version``, ``digest`` edited; the
header array re-encoded); array edits (another dtype: ints, bool, complex, strings, dates,
structured, object; another shape; NaN, inf, huge, negative values; arrays swapped, renamed,
removed, added, copied over each other; zip members added or left out); for detectors, edits
inside the skops classifier (a tree node's field, a value or shape of its arrays, a value or type
name of its schema); for the JSON report, edits of its tree, a BOM, UTF-16. An edited archive is
usually *re-signed* (its digest made to fit, as a deliberate forger would), sometimes rewritten as
format version 1 (which has no digest), sometimes left with a stale digest.

The rule. Loading a mutated file must either

* give back exactly the saved object (``==``; detectors define no ``==``, so every field, the
  profile and every tree's node and value arrays are compared: ``fuzzing.detector_state``): *same*;
* raise ``nnslicer.errors.FileFormatError``: *refused*;
* or, only for a *crafted* file (re-signed, version 1, or JSON, which has no digest), give a
  different object that is a valid one of its kind: it passes an independent check of what that
  kind's ``save`` can have written (``fuzzing.*_problem``: types, ranges, shapes, dtypes,
  finiteness, a detector's trees well formed for its model), saves and loads back equal to itself,
  and survives cheap use (repr, summary, masks, ``check(graph)``, ``Slicer.fit(profile=)``,
  ``restore``...; a detector is scored in a subprocess, in case scikit-learn segfaults; a secret's
  masks, one bool per weight of its shapes, only up to 2**24 weights) raising nothing but nnslicer's
  own errors: *changed*. Such a file is a valid file of its kind by construction (anyone can write
  it with ``save``), so loading it is right; the oracle is what keeps "valid" from meaning "whatever
  the loader accepts". Hand-made objects save and load too, so free-form fields (a secret's
  digests and method, a report's notes) are only type-checked.

Anything else fails: another exception, or a failure in use, is a *crash*; a different object from
a file that is only damaged (a stale digest, broken bytes), or one that fails the oracle or the
round trip, is a *silent change*.

Runs. By default every hypothesis test runs 150 examples per kind and mutation family,
derandomized (the same examples in every run: reproducible CI), and ``test_seeded_mutations`` runs
``NNSLICER_FUZZ_N`` (default 1,500) mutations per kind from fixed seeds; about a minute in all. ``NNSLICER_FUZZ=long``
selects a long profile (many more, fresh random examples, and 5,000 seeded mutations per kind);
``pytest -m slow tests/test_fuzz.py`` runs ``test_seeded_mutations_long`` (``NNSLICER_FUZZ_LONG_N``,
default 5,000 per kind, other seeds). The tally per kind (tried / same / refused / changed / crash /
silent, and the first failures) is printed at the end of the module (``-s`` shows it) and written as
JSON to ``$NNSLICER_FUZZ_TALLY`` when set, with the seconds the module took; the "hypothesis" counts
include the replays of a failing example while it shrinks, the "seeded" counts are exact. A seeded
failure names its seed: ``replay(kinds, kind, seed)`` rebuilds the same mutated file. (A detector's
classifier, as skops writes it, names its arrays by object ids, so the detector file's bytes differ
a little from run to run, and a few of its seeded bit flips land elsewhere: its same/refused counts
may move by a case or two.)
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("hypothesis")
keras = pytest.importorskip("keras")
pytest.importorskip("sklearn")
pytest.importorskip("skops")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import nnslicer  # noqa: E402

import fuzzing as fz  # noqa: E402
from tiny import self_labelled, tiny_cnn  # noqa: E402

LONG = os.environ.get("NNSLICER_FUZZ", "default") == "long"
_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("nnslicer-fuzz", max_examples=150, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_CHECKS, print_blob=False)
settings.register_profile("nnslicer-fuzz-long", max_examples=2000, deadline=None, derandomize=False,
                          database=None, suppress_health_check=_CHECKS, print_blob=True)
FUZZ = settings.get_profile("nnslicer-fuzz-long" if LONG else "nnslicer-fuzz")
SEEDED = int(os.environ.get("NNSLICER_FUZZ_N", 5000 if LONG else 1500))
SEEDED_LONG = int(os.environ.get("NNSLICER_FUZZ_LONG_N", 5000))

TALLY = fz.Tally()
ARCHIVE_FAMILIES = {"bytes": fz.byte_damage, "header": fz.header_edit, "arrays": fz.array_edit}
FAMILIES = {"slice": ARCHIVE_FAMILIES, "profile": ARCHIVE_FAMILIES, "secret": ARCHIVE_FAMILIES,
            "detector": dict(ARCHIVE_FAMILIES, classifier=fz.classifier_edit),
            "report": {"bytes": fz.report_bytes, "json": fz.json_edit}}
CASES = [(kind, family) for kind, families in FAMILIES.items() for family in families]


# --------------------------------------------------------------------------- the originals
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def world(workdir):
    """The model, its data and one original of each kind (about 5 s on two cores)."""
    from analyses.adversarial import SliceDetector
    from analyses.compression_report import compare
    from analyses.protection import protect

    model = tiny_cnn(0, n_classes=3)
    x, y = self_labelled(model, 40, 1)
    slicer = nnslicer.Slicer(model, granularity="channel").fit(x, y)
    protected, secret = protect(model, None, x, y, classes=[int(y[0])], method="magnitude", fraction=0.3)
    with warnings.catch_warnings():  # cross-validation folds without every class
        warnings.simplefilter("ignore")
        detector = SliceDetector(slicer, layer=-1, classifier="tree", contamination=0.1).fit(x, y)
    report = compare(model, tiny_cnn(1, n_classes=3, name="other"), x, y, max_per_class=5, saliency_samples=10)
    model_path, x_path = os.path.join(workdir, "model.keras"), os.path.join(workdir, "x.npy")
    model.save(model_path)
    np.save(x_path, x[:4])
    return {"model": model, "x": x, "slicer": slicer, "slice": slicer.slice(x[0]), "profile": slicer.profile_,
            "protected": protected, "secret": secret, "detector": detector, "report": report,
            "model_path": model_path, "x_path": x_path}


@pytest.fixture(scope="module")
def kinds(world, workdir):
    """One :class:`fuzzing.Kind` per file kind."""
    from analyses.adversarial import load_detector
    from analyses.compression_report import CompressionReport
    from analyses.protection import ProtectionSecret, restore

    model, graph = world["model"], world["slicer"].graph_

    def use_slice(s):
        repr(s), s.summary(), s.masks(), s.to_vector(kind="both"), s.jaccard(s)
        s.check(graph)

    def use_profile(p):
        repr(p)
        p.check(graph)
        nnslicer.Slicer(model, granularity="channel").fit(profile=p)

    def use_secret(s):
        repr(s), s.n_hidden
        if sum(math.prod(shape) for shape in s.shapes.values()) <= 2**24:  # one bool per weight of a model
            s.masks()
        restore(world["protected"], s)

    def use_report(r):
        repr(r), r.summary(), r.table(), r.headline(), r.class_changes, r.survival_mean

    specs = {
        "slice": (".npz", nnslicer.Slice.load, lambda o, p: o.save(p), lambda a, b: a == b, fz.slice_problem,
                  use_slice),
        "profile": (".npz", nnslicer.Profile.load, lambda o, p: o.save(p), lambda a, b: a == b, fz.profile_problem,
                    use_profile),
        "secret": (".npz", ProtectionSecret.load, lambda o, p: o.save(p), lambda a, b: a == b, fz.secret_problem,
                   use_secret),
        "detector": (".nnsd", lambda p: load_detector(p, model), lambda o, p: o.save(p), fz.detector_equal,
                     fz.detector_problem, None),
        "report": (".json", CompressionReport.load, lambda o, p: o.save_json(p), lambda a, b: a == b,
                   fz.report_problem, use_report),
    }
    out = {}
    for name, (suffix, load, save, equal, problem, use) in specs.items():
        path = os.path.join(workdir, f"original-{name}{suffix}")
        save(world[name], path)
        with open(path, "rb") as f:
            raw = f.read()
        kind = fz.Kind(name, suffix, world[name], raw, load, save, equal, problem, use, FAMILIES[name])
        assert fz.judge(kind, fz.Mutated(raw, ["none"]), workdir).outcome == "same", name  # the original loads back
        out[name] = kind
    return out


@pytest.fixture(scope="module", autouse=True)
def report_tally():
    """Print the tally when the module ends (visible with -s) and write it to $NNSLICER_FUZZ_TALLY."""
    start = time.perf_counter()
    yield
    data = dict(TALLY.as_dict(), seconds=round(time.perf_counter() - start, 1), profile="long" if LONG else "default",
                seeded_per_kind=SEEDED)
    print("\n\nnnslicer fuzzing tally (tried / same / refused / changed / crash / silent)")
    for section in data["counts"]:
        print(f"[{section}]\n{TALLY.table(section)}")
    for section, failures in data["failures"].items():
        for key, cases in failures.items():
            print(f"[{section}] {key}:")
            for case in cases:
                print("  " + case.replace("\n", "\n  "))
    target = os.environ.get("NNSLICER_FUZZ_TALLY")
    if target:
        with open(target, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)


def test_the_rule(kinds, workdir):
    """The judge tells each outcome apart (so that a quiet tally means something)."""
    import dataclasses

    from nnslicer.errors import FileFormatError

    k = kinds["slice"]
    original = k.original
    other = nnslicer.Slice(original.neuron_counts, original.synapse_counts, **dict(original.meta, samples=2))
    odd = nnslicer.Slice(original.neuron_counts, original.synapse_counts, **dict(original.meta, samples=2))
    odd.neuron_counts = {n: v.astype("m8[s]") for n, v in odd.neuron_counts.items()}

    def judge(load, crafted=True):
        return fz.judge(dataclasses.replace(k, load=load), fz.Mutated(k.raw, ["none"], crafted), workdir).outcome

    def refuse(path):
        raise FileFormatError("no")

    def fail(path):
        raise KeyError("x")

    assert judge(nnslicer.Slice.load) == "same"
    assert judge(refuse) == "refused"
    assert judge(fail) == "crash"
    assert judge(lambda path: other) == "changed"
    assert judge(lambda path: other, crafted=False) == "silent"  # a damaged file must not load different
    assert judge(lambda path: odd) == "silent"  # no save writes it


    class Unequal:
        def __eq__(self, other):
            raise TypeError("cannot compare")

    assert judge(lambda path: Unequal()) == "crash"  # not even comparable


# --------------------------------------------------------------------------- hypothesis
@pytest.mark.parametrize("kind, family", CASES)
@settings(FUZZ)
@given(data=st.data())
def test_mutated_file_loads_back_or_is_refused(kinds, workdir, kind, family, data):
    k = kinds[kind]
    mutated = k.families[family](fz.HypothesisDraw(data), k.raw)
    out = fz.judge(k, mutated, workdir)
    TALLY.add("hypothesis", out)
    assert not out.failed, str(out)


# --------------------------------------------------------------------------- seeded, tallied
def replay(kinds, kind, seed):
    """The mutated file of one seeded case (its seed is in the failure's text): ``Mutated``."""
    draw = fz.RandomDraw(seed)
    k = kinds[kind]
    family = draw.choice(sorted(k.families))
    return k.families[family](draw, k.raw)


def run_seeded(kinds, world, workdir, section, n, base):
    """``n`` mutations per kind from the seeds ``{base}-{kind}-{i}``, tallied under ``section``;
    detectors that loaded as valid other objects are then scored in a subprocess. Returns the
    failures."""
    failures = []
    keep = os.path.join(workdir, f"{section}-detectors")
    os.makedirs(keep, exist_ok=True)
    changed = {}
    for name, k in kinds.items():
        for i in range(n):
            seed = f"{base}-{name}-{i}"
            mutated = replay(kinds, name, seed)
            out = fz.judge(k, mutated, workdir, seed=seed)
            TALLY.add(section, out)
            if out.failed:
                failures.append(out)
            elif name == "detector" and out.outcome == "changed":
                path = os.path.join(keep, f"{i}.nnsd")
                with open(path, "wb") as f:
                    f.write(mutated.data)
                changed[path] = out
    if changed:
        for path, problem in fz.score_in_subprocess(world["model_path"], world["x_path"], list(changed)).items():
            if problem:
                out = changed[path]
                out.outcome, out.detail = "crash", f"scoring the loaded detector (in a subprocess): {problem}"
                TALLY.correct(section, "detector", "changed", "crash")
                TALLY.failures.setdefault(section, {}).setdefault("detector/crash", []).append(str(out))
                failures.append(out)
    return failures


def _message(failures):
    return f"{len(failures)} failures; the first ones:\n" + "\n".join(str(f) for f in failures[:15])


def test_seeded_mutations(kinds, world, workdir):
    failures = run_seeded(kinds, world, workdir, "seeded", SEEDED, "nnslicer-fuzz")
    assert not failures, _message(failures)


@pytest.mark.slow
def test_seeded_mutations_long(kinds, world, workdir):
    failures = run_seeded(kinds, world, workdir, "seeded-long", SEEDED_LONG, "nnslicer-fuzz-long")
    assert not failures, _message(failures)
