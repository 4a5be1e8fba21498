"""The README's Python examples run as written, one after the other in one namespace (as a
reader would paste them), in a scratch folder."""

import pathlib
import re
import shutil

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_python_examples():
    blocks = python_blocks()
    assert len(blocks) >= 5 and all(b.strip() for b in blocks)


@pytest.mark.skipif(shutil.which("dot") is None, reason="the render example needs Graphviz's dot")
def test_the_readme_python_examples_run(tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)
    namespace = {}
    blocks = python_blocks()
    exec(compile(blocks[0], "README.md: quick start", "exec"), namespace)
    # names the later examples leave to the reader: inputs to check, a stream, two slices, an
    # attacker's data
    x_test, x_train, y_test = namespace["x_test"], namespace["x_train"], namespace["y_test"]
    namespace.update(x=x_test[:40], y=y_test[:40], dataset=tf.data.Dataset.from_tensor_slices(x_test[:64]),
                     clean=namespace["s"], adversarial=namespace["other"], x_attacker=x_train[:256])
    for i, block in enumerate(blocks[1:], 2):
        exec(compile(block, f"README.md: python example {i}", "exec"), namespace)
    assert (tmp_path / "digit.npz").exists() and (tmp_path / "detector.nnsd").exists()
    assert (tmp_path / "slice.svg").stat().st_size > 0 and (tmp_path / "report.html").exists()
    assert list(namespace["ranking"]) and np.isfinite(list(namespace["ranking"].values())).all()


def shell_commands():
    """Every ``nnslicer ...`` command of the README's sh blocks, continuation lines joined,
    comments and ``[optional]`` synopsis parts left out."""
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\[[^\]]*\]", "", line.split("#")[0]).strip()
            if line.startswith("nnslicer "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_the_readme_commands_parse():
    """Each command the README shows is accepted by the parser (options exist, values fit)."""
    from nnslicer.cli import build_parser

    commands = shell_commands()
    assert len(commands) >= 15
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.command == argv[0] and callable(args.func)
