"""The README's commands, CI and the package metadata agree with each other."""

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no '## Quick start' section"
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", match.group(1), flags=re.S)]


def _setup_cfg():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser


def test_readme_quick_start_has_two_one_line_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    demo, tests = commands
    assert demo.endswith("nnslicer demo")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    _, tests = _quick_start_commands()
    assert tests in ci.splitlines()
    assert "set -euo pipefail" in ci


def test_extras_and_entry_point():
    cfg = _setup_cfg()

    def reqs(value):
        return {line.strip() for line in value.splitlines() if line.strip()}

    extras = {k: reqs(v) for k, v in cfg["options.extras_require"].items()}
    union = set().union(*(v for k, v in extras.items() if k not in ("all", "dev")))
    assert extras["all"] == union
    assert {"tf", "ray", "graphviz", "analyses", "dev"} <= set(extras)
    # `import nnslicer` needs numpy and networkx; the heavy pieces stay optional
    base = reqs(cfg["options"]["install_requires"])
    assert {"numpy>=1.24", "networkx>=3.0"} <= base
    names = {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in base}
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "ray", "scikit-learn", "graphviz"}
    assert "nnslicer = nnslicer.cli:main" in cfg["options.entry_points"]["console_scripts"]


def test_version_is_read_from_the_package():
    cfg = _setup_cfg()
    assert cfg["metadata"]["version"] == "attr: nnslicer.__version__"
    text = (ROOT / "nnslicer" / "__init__.py").read_text(encoding="utf-8")
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"', text, flags=re.M)


def test_installed_metadata_matches_when_installed():
    from importlib import metadata

    try:
        installed = metadata.version("nnslicer")
    except metadata.PackageNotFoundError:
        pytest.skip("nnslicer is not installed (pip install -e .)")
    text = (ROOT / "nnslicer" / "__init__.py").read_text(encoding="utf-8")
    assert f'__version__ = "{installed}"' in text
