"""requirements/lock.txt pins the whole test environment and covers what pyproject.toml asks for.

The lock is what CI and the README's test command install (``pip install -c requirements/lock.txt
-e ".[test]"``); ``bash requirements/make_lock.sh`` rebuilds it. A requirement added to pyproject.toml
without rebuilding the lock, or a pin that no longer satisfies pyproject's range, fails here.
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REFERENCE_DIR, ROOT

LOCK = ROOT / "requirements" / "lock.txt"
# Extras outside the test environment: the benchmark's optional peer (ultralytics) is not locked.
UNLOCKED_EXTRAS = {"bench"}


def lock_pins(text: str) -> dict[str, str]:
    """``{canonical name: version}`` of a lock file; every line must be ``name==version``."""
    pins = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert match, f"{LOCK.name}:{number}: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{LOCK.name}:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


def locked_requirements() -> list[tuple[str, Requirement]]:
    """Every requirement of pyproject.toml that the test environment must hold: ``(where, requirement)``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, requirements in project["optional-dependencies"].items():
        if extra not in UNLOCKED_EXTRAS:
            out += [(f"extra {extra!r}", Requirement(r)) for r in requirements]
    return out


def test_lock_pins_every_requirement_within_pyproject_ranges() -> None:
    pins = lock_pins(LOCK.read_text())
    problems = []
    for where, requirement in locked_requirements():
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} ({where}) is not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} does not satisfy {requirement} ({where})")
    assert not problems, "requirements/lock.txt is stale; run `bash requirements/make_lock.sh`:\n" + "\n".join(problems)


def test_lock_pins_the_builds_the_fixtures_were_made_with() -> None:
    """torch, torchvision and OpenCV at the versions the reference fixtures record (public and hidden set alike)."""
    pins = lock_pins(LOCK.read_text())
    index = REFERENCE_DIR / "index.json"
    if not index.exists():
        pytest.skip(f"no reference fixtures at {REFERENCE_DIR}")
    environment = json.loads(index.read_text())["environment"]
    for package, key in (("torch", "torch"), ("torchvision", "torchvision"), ("opencv-python-headless", "opencv")):
        made_with = environment[key].split("+")[0]
        assert pins[package].split("+")[0].startswith(made_with), f"lock: {package}=={pins[package]}, fixtures: {key} {environment[key]}"


def test_lock_parser_refuses_loose_lines() -> None:
    with pytest.raises(AssertionError, match="not an exact pin"):
        lock_pins("numpy>=1.24\n")
    with pytest.raises(AssertionError, match="pinned twice"):
        lock_pins("numpy==2.0\nNumPy==2.1\n")
    assert lock_pins("# header\nPyYAML==6.0.4\n") == {"pyyaml": "6.0.4"}
