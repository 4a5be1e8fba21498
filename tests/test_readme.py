"""The README's and the docs' examples run as written: the Python ones one after the other in one
namespace (as a reader would paste them: the README's first, then docs/guide.md's and
docs/analyses.md's), in a scratch folder; the README's walkthrough, command by command; and
every ``nnslicer`` command they show parses."""

import os
import pathlib
import re
import shutil

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The pages whose examples are tested, in the order a reader goes through them.
PAGES = ("README.md", "docs/guide.md", "docs/analyses.md", "docs/performance.md", "docs/design.md")


def pages_text():
    return "\n".join((ROOT / page).read_text(encoding="utf-8") for page in PAGES)


def python_blocks():
    return re.findall(r"```python\n(.*?)```", pages_text(), flags=re.S)


def test_the_pages_have_python_examples():
    blocks = python_blocks()
    assert len(blocks) >= 5 and all(b.strip() for b in blocks)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(re.findall(r"```python\n", readme)) == 1  # the tour; the rest is in docs/


@pytest.mark.skipif(shutil.which("dot") is None, reason="the render example needs Graphviz's dot")
def test_the_readme_python_examples_run(tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)
    namespace = {}
    blocks = python_blocks()
    exec(compile(blocks[0], "README.md: Python", "exec"), namespace)
    # names the later examples leave to the reader: inputs to check, a stream, two slices, an
    # attacker's data
    x_test, x_train, y_test = namespace["x_test"], namespace["x_train"], namespace["y_test"]
    namespace.update(x=x_test[:40], y=y_test[:40], dataset=tf.data.Dataset.from_tensor_slices(x_test[:64]),
                     clean=namespace["s"], adversarial=namespace["other"], x_attacker=x_train[:256])
    for i, block in enumerate(blocks[1:], 2):
        exec(compile(block, f"README.md and docs/: python example {i}", "exec"), namespace)
    assert (tmp_path / "digit.npz").exists() and (tmp_path / "detector.nnsd").exists()
    assert (tmp_path / "slice.svg").stat().st_size > 0 and (tmp_path / "report.html").exists()
    assert list(namespace["ranking"]) and np.isfinite(list(namespace["ranking"].values())).all()


def shell_commands(text=None):
    """Every ``nnslicer ...`` command of the sh blocks of ``text`` (default: every page),
    continuation lines joined, comments and ``[optional]`` synopsis parts left out."""
    import shlex

    commands = []
    for block in re.findall(r"```sh\n(.*?)```", pages_text() if text is None else text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\[[^\]]*\]", "", line.split("#")[0]).strip()
            if line.startswith("nnslicer "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_the_commands_parse():
    """Each command the README and the docs show is accepted by the parser (options exist,
    values fit)."""
    from nnslicer.cli import build_parser

    commands = shell_commands()
    assert len(commands) >= 15
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.command == argv[0] and callable(args.func)


def walkthrough():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Walkthrough.*?\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no walkthrough"
    return shell_commands(match.group(1))


def test_the_walkthrough_runs(tmp_path, monkeypatch, capsys):
    """The README's walkthrough, every command as written, in a scratch folder (in this process:
    the commands' output is checked, not their start-up)."""
    from nnslicer import datasets
    from nnslicer.cli import main

    if not os.path.isdir(datasets.FASHION_MNIST_ROOT):
        pytest.skip("needs Debian's dataset-fashion-mnist (the README's test command installs it)")
    monkeypatch.chdir(tmp_path)
    commands = walkthrough()
    assert {argv[0] for argv in commands} >= {"demo", "info", "profile", "slice", "render", "attack", "detect",
                                              "prune", "protect", "restore", "layers", "compress", "compare"}
    said = []
    for argv in commands:
        assert main(argv) == 0, argv
        said.append(capsys.readouterr().out)
    text = "\n".join(said)
    for line in ("sliced for output 9 (Ankle boot)", "fm/adv.npz", "-> fm/report.html",
                 "target classes (5 (Sandal), 7 (Sneaker), 9 (Ankle boot))"):
        assert line in text
    for name in ("model.keras", "profile.npz", "sample-slice.svg", "sample-input.png", "detector.nnsd",
                 "verdicts.csv", "shoes.keras", "secret.npz", "restored.keras", "ranking.json", "q4.keras",
                 "report.html"):
        assert (tmp_path / "fm" / name).stat().st_size > 0, name
