#!/usr/bin/env python3
"""Set up the project environment and run its main jobs; needs only Python 3.11 and git.

    python3 dev.py repro   # create .venv if needed, install, run `dvc repro` (the whole pipeline)
    python3 dev.py test    # create .venv if needed, install, run the test suite
    python3 dev.py flow    # run the pipeline as a Prefect flow (ephemeral Prefect API)
    python3 dev.py exp examples/digits.yaml   # `dvc exp run -S key=value ...` with a file of overrides
    python3 dev.py lint    # ruff

Extra arguments go to the underlying tool: `python3 dev.py test -m "not slow"`, `python3 dev.py repro train`.
The environment is reinstalled when pyproject.toml or constraints.txt (the exact tested versions) changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".visionflow-installed"


def _say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


CONSTRAINTS = ROOT / "constraints.txt"


def _install_key() -> str:
    """What the installed environment was made from: the declared dependencies and the pinned versions."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", CONSTRAINTS.name):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_env() -> None:
    """Create .venv with this interpreter and install the project with its dev extras at the tested versions
    (again whenever pyproject.toml or constraints.txt changes)."""
    if sys.version_info[:2] < (3, 11):  # noqa: UP036 - dev.py runs under whatever python3 the user has
        sys.exit(f"visionflow needs Python 3.11 or newer; this is {sys.version.split()[0]} ({sys.executable})")
    if not (BIN / "python").exists():
        _say(f"creating {VENV.relative_to(ROOT)}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _install_key():
        return
    _say("installing visionflow and its dependencies (a few minutes the first time)")
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-qq", "-c", str(CONSTRAINTS), "-e", ".[dev]"], cwd=ROOT, check=True)
    STAMP.write_text(_install_key())


STALE_PLAN = 9  # `visionflow plan --check`: plan.json was made on another kind of machine (visionflow.errors)


def run(*command: str) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def overrides(path: Path) -> list[str]:
    """``-S key=value`` for each dotted key of a YAML file (values in flow style, as DVC parses them)."""
    import yaml  # from .venv: main() re-runs dev.py with that interpreter for this job

    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    flags = []
    for key, value in settings.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
        flags += ["-S", f"{key}={text}"]
    return flags


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"repro", "test", "flow", "lint", "setup", "exp"} or argv == ["exp"]:
        print(__doc__)
        return 2
    job, extra = argv[0], argv[1:]
    ensure_env()
    if job == "repro":  # DVC cannot see a move to another kind of machine: a plan made on one is made again
        if subprocess.run([str(BIN / "visionflow"), "plan", "--check"], cwd=ROOT).returncode == STALE_PLAN:
            dvc = str(BIN / "dvc")  # the stages before plan brought up to date, then plan made again
            replanned = run(dvc, "repro", "balance") or run(dvc, "repro", "--force", "--single-item", "plan")
            if replanned:
                return replanned
        return run(str(BIN / "dvc"), "repro", *extra)
    if job == "test":
        return run(str(BIN / "python"), "-m", "pytest", *extra)
    if job == "exp":
        if Path(sys.executable).parent != BIN:  # read the YAML with the environment's PyYAML
            return run(str(BIN / "python"), str(ROOT / "dev.py"), *argv)
        return run(str(BIN / "dvc"), "exp", "run", *overrides(Path(extra[0])), *extra[1:])
    if job == "flow":
        return run(str(BIN / "python"), "pipelines/training.py", *extra)
    if job == "lint":
        return run(str(BIN / "ruff"), "check", ".", *extra)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
