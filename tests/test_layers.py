"""The layers depend one way (engine <- Keras adapter <- analyses <- command line), and the
analyses use a documented public surface of nnslicer (docs/design.md)."""

import ast
import configparser
import os
import pkgutil
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What the analyses may import from nnslicer: module -> the names it offers them (its __all__).
#: The analyses' commands (analyses.cli) may also use the command line's option helpers.
PUBLIC = ("nnslicer", "nnslicer.errors", "nnslicer.io", "nnslicer.validation", "nnslicer.keras", "nnslicer.ops",
          "nnslicer.models", "nnslicer.datasets")
COMMAND_HELPERS = ("nnslicer.cli.options",)


def _contracts():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, ".importlinter"))
    return {name.split(":")[-1]: {k: v.split() for k, v in section.items()}
            for name, section in config.items() if name.startswith("importlinter:contract:")}


def _modules(package):
    """The modules directly under ``package`` (subpackages by their own name)."""
    path = os.path.join(ROOT, *package.split("."))
    return {f"{package}.{m.name}" for m in pkgutil.iter_modules([path])}


def _imports(path):
    """``(module, [names])`` of every ``from X import names`` and ``import X`` in a file."""
    tree = ast.parse(open(path).read(), path)
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            yield base, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _analyses_files():
    for folder, _, files in os.walk(os.path.join(ROOT, "analyses")):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(folder, f)


@pytest.mark.skipif(shutil.which("lint-imports") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "lint-imports")), reason="import-linter is not installed")
def test_the_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable), "lint-imports")
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "4 kept, 0 broken" in run.stdout


def test_every_module_belongs_to_one_layer():
    """A new module must join its layer's list in .importlinter, or no contract would see it."""
    contracts = _contracts()
    engine = set(contracts["engine"]["source_modules"])
    adapter = set(contracts["adapter"]["source_modules"])
    analyses = set(contracts["analyses"]["source_modules"])
    command_line = {"nnslicer.cli", "analyses.cli"}
    layers = [engine, adapter, analyses, command_line]
    for a in range(len(layers)):
        for b in range(a + 1, len(layers)):
            assert not layers[a] & layers[b]
    modules = _modules("nnslicer") | _modules("analyses")
    assert modules == set().union(*layers), "modules in no layer (or listed but gone): " + \
        str(sorted(modules ^ set().union(*layers)))


def test_the_analyses_import_only_the_public_surface():
    import importlib

    allowed = {name: set(importlib.import_module(name).__all__) for name in PUBLIC + COMMAND_HELPERS}
    bad = []
    for path in _analyses_files():
        command = os.sep + "cli" + os.sep in path
        for module, names in _imports(path):
            if module != "nnslicer" and not module.startswith("nnslicer."):
                continue
            if module in COMMAND_HELPERS and not command:
                bad.append(f"{path}: {module} (command-line helpers, for analyses/cli only)")
            elif module not in allowed:
                bad.append(f"{path}: {module} is not a public module ({', '.join(PUBLIC)})")
            else:
                bad += [f"{path}: {module}.{n} is not public" for n in names if n not in allowed[module]]
    assert not bad, "\n".join(bad)


def _python(code):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_help_imports_no_analyses_module_nor_tensorflow():
    out = _python(
        "import contextlib, io, sys\n"
        "from nnslicer.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m == 'analyses' or m.startswith('analyses.')))\n"
        "print('tensorflow' in sys.modules)\n"
        "print('detect' in text.getvalue() and 'prune' in text.getvalue())\n")
    assert out.split("\n")[:3] == ["[]", "False", "True"]


def test_a_command_loads_its_own_group_only():
    out = _python(
        "import contextlib, io, sys\n"
        "from nnslicer.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "    try:\n"
        "        main(['detect', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('analyses.cli.')))\n"
        "print('fit' in text.getvalue() and 'score' in text.getvalue())\n")
    assert out.split("\n")[:2] == ["['analyses.cli.detect']", "True"]


def test_the_parser_can_load_every_command_group():
    from nnslicer.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    full = {name: p for name, p in sub.choices.items()}
    for name in ("info", "profile", "slice", "render", "demo", "attack", "detect", "prune", "protect", "restore",
                 "layers", "compress", "compare"):
        assert name in full
        assert [a for a in full[name]._actions if a.dest != "help"], name  # its own arguments, not a stub


def test_only_registered_frontends_turn_models_into_graphs():
    import nnslicer
    from nnslicer.errors import InvalidParameterError
    from nnslicer.frontends import Frontend, as_graph, register_frontend

    with pytest.raises(InvalidParameterError, match="Slicer needs a Keras model. Got dict instead"):
        nnslicer.Slicer({}).fit([[0.0]])
    with pytest.raises(InvalidParameterError, match="profile needs a DataFlowGraph"):
        nnslicer.profile("model.keras", [[0.0]])
    with pytest.raises(InvalidParameterError, match="takes a nnslicer.frontends.Frontend"):
        register_frontend(object())
    assert issubclass(type(nnslicer.keras.KerasFrontend()), Frontend)
    graph = object.__new__(nnslicer.DataFlowGraph)
    assert as_graph(graph) is graph
