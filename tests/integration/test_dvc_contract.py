"""dvc.yaml cannot drift from the code: each stage's deps, params and outs are checked against what the stage
imports, reads and writes, and every entry is shown to be needed.

How each side is found:

- **Import closure** (static, from the source): the stage module ``visionflow.stages.<name>`` and everything it
  imports inside ``src/visionflow``, at module level or inside functions, followed transitively, plus the CLI
  entry point every ``visionflow <stage>`` command runs (``cli.py`` and its module-level imports; its other
  commands' imports are inside their functions and are not part of a stage) and the package ``__init__.py`` of
  every module found. Every module of the closure must be a dep, and every dep under ``src/visionflow`` must be in
  the closure: no folder of code, no module the stage does not import.
- **Reads, writes and params keys** (observed): the six stages run in this process on tiny data of both tasks
  (built-in shapes, a CamVid-layout folder, scikit-learn's digits), under a Python audit hook that records every
  file opened, renamed onto, created or removed below the working folder or the data root (paths that are gone
  once the pipeline ran are temporary and ignored), and a hook on the typed config that records every params key
  the stage reads (a section dumped whole counts as all of its keys).
- A file read is covered by a dep that is it or a folder above it, by the stage's own outs (a persistent
  checkpoint it resumes from), or, for an image or mask, by a manifest among its deps that names it: each row holds
  the image's and the mask's sha256, so a changed file changes the manifest. A file written is covered by an out,
  metric or plot that is it or a folder above it.
  A params key is covered by a ``params:`` entry that is it or a section above it, or by ``${...}`` in the stage's
  deps and outs (the paths).
- Every dep and params entry must be needed by at least one of the runs (a dep is imported or read, a params entry
  covers a key read), and every out must be written by every run, since DVC fails a stage whose output is missing
  (an output of one task only would have to live in a folder out that both tasks write).

Exempt, and why:

- params keys read only to be logged to MLflow (``Config.flat()``, the run's params), the ``orchestration`` section
  (the Prefect flows read it, no stage does), ``tracking`` (where runs are logged: it changes no file a stage
  writes) and ``paths.cache`` (where decoded copies of the images are kept);
- files read only to be copied into the MLflow run (``tracking.log_artifact``: the run's record of what the data
  stages produced), ``dvc.lock`` (read for the lineage tags DVC recorded), the MLflow store (``mlflow.db``,
  ``mlartifacts/``) and the decode cache (``paths.cache``: keyed by the images' hashes, safe to delete).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from tests.conftest import REPO, TINY, camvid_like_dataset, folder_params, make_config
from visionflow import config as config_module
from visionflow import tracking
from visionflow.config import Config
from visionflow.stages import STAGE_NAMES

pytestmark = pytest.mark.slow

SRC = REPO / "src"
PACKAGE = "visionflow"
EXEMPT_KEYS = ("orchestration", "tracking", "paths.cache")
EXEMPT_READS = ("dvc.lock", "mlflow.db", "mlartifacts")  # and paths.cache, the stage's own outs, MLflow copies


# ---------------------------------------------------------------------------------------------------------------
# the import closure, from the source


def module_file(name: str, src: Path = SRC) -> Path | None:
    base = src / Path(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported(name: str, src: Path = SRC, top_level_only: bool = False) -> set[str]:
    """The visionflow modules ``name`` imports (``from x import y`` counts y when y is a module)."""
    path = module_file(name, src)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == PACKAGE and module_file(n, src)}


def with_parents(modules: set[str]) -> set[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    out = set(modules)
    for module in modules:
        parts = module.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


@functools.cache
def closure(stage: str, src: Path = SRC) -> set[Path]:
    """Files (relative to the repository) of every module ``visionflow <stage>`` imports."""
    seen: set[str] = set()
    todo = [f"{PACKAGE}.stages.{stage}", *imported(f"{PACKAGE}.cli", src, top_level_only=True), f"{PACKAGE}.cli"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module != f"{PACKAGE}.cli":  # its other commands import inside their functions
            todo.extend(imported(module, src))
    return {module_file(m, src).relative_to(src.parent) for m in with_parents(seen)}  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------------------------
# what the stages read, write and look up, observed


@dataclass
class Observed:
    reads: set[Path] = field(default_factory=set)  # relative to the working folder, or absolute under data.root
    writes: set[Path] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)  # dotted params keys; "a.b.*" for a section dumped whole


@dataclass(eq=False)
class Run:
    """One pipeline run on tiny data: what each stage did, and the config it ran with."""

    name: str
    workdir: Path
    config: Config
    stages: dict[str, Observed]


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Python's audit hook: files opened (for reading or writing), renamed onto, created or removed."""
    observed = _Global.observed
    if observed is None or _Global.paused:
        return
    if event == "open":
        path, mode, flags = args
        if not isinstance(path, str | Path):
            return  # a file descriptor
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR) != 0  # os.open
        )
        (observed.writes if writing else observed.reads).add(Path(path))
    elif event == "os.rename" and isinstance(args[1], str | Path) and args[3] in (None, -1):
        observed.writes.add(Path(args[1]))
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree") and isinstance(args[0], str | Path):
        relative_to_descriptor = args[-1] not in (None, -1)  # shutil.rmtree's inner calls
        if not relative_to_descriptor:
            observed.writes.add(Path(args[0]))


class _Global:
    """The audit hook cannot be removed once added: it records only while a stage runs."""

    observed: Observed | None = None
    paused = False
    installed = False


@contextlib.contextmanager
def _paused() -> Iterator[None]:
    before, _Global.paused = _Global.paused, True
    try:
        yield
    finally:
        _Global.paused = before


def _prefixes(model: BaseModel, prefix: str, out: dict[int, str]) -> None:
    out[id(model)] = prefix
    for name, info in type(model).model_fields.items():
        value = object.__getattribute__(model, name)
        key = f"{prefix}{info.alias or name}"
        if isinstance(value, BaseModel):
            _prefixes(value, key + ".", out)


@contextlib.contextmanager
def _tracing_config(config: Config, observed: Observed, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Record each params key read through the typed config while the stage runs."""
    prefixes: dict[int, str] = {}
    _prefixes(config, "", prefixes)
    section = config_module._Section
    plain_get = object.__getattribute__
    original_dump = section.model_dump
    original_flat = Config.flat

    def traced_get(self: Any, name: str) -> Any:
        value = plain_get(self, name)
        if not _Global.paused and not name.startswith("_") and not isinstance(value, BaseModel):
            prefix = prefixes.get(id(self))
            fields = type(self).model_fields
            if prefix is not None and name in fields:
                observed.keys.add(prefix + (fields[name].alias or name))
        return value

    def traced_dump(self: Any, *args: Any, **kwargs: Any) -> Any:
        prefix = prefixes.get(id(self))
        if not _Global.paused and prefix is not None:
            observed.keys.add(prefix + "*")
        with _paused():
            return original_dump(self, *args, **kwargs)

    def logged_only(self: Config) -> dict[str, Any]:  # params logged to MLflow: exempt
        with _paused():
            return original_flat(self)

    monkeypatch.setattr(section, "__getattribute__", traced_get)
    monkeypatch.setattr(section, "model_dump", traced_dump)
    monkeypatch.setattr(Config, "flat", logged_only)
    yield


def _observe_stage(stage: str, config: Config, monkeypatch: pytest.MonkeyPatch) -> Observed:
    import importlib

    observed = Observed()
    original_log_artifact = tracking.log_artifact

    def copy_to_mlflow(path: Path, artifact_path: str | None = None) -> None:  # read only to be logged: exempt
        with _paused():
            original_log_artifact(path, artifact_path)

    run = importlib.import_module(f"visionflow.stages.{stage}").run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking, "log_artifact", copy_to_mlflow)
        with _tracing_config(config, observed, patch):
            _Global.observed = observed
            try:
                run(config)
            finally:
                _Global.observed = None
    return observed


def observe_pipeline(name: str, workdir: Path, overrides: dict[str, Any]) -> Run:
    if not _Global.installed:
        sys.addaudithook(_audit)
        _Global.installed = True
    workdir.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        config = make_config(TINY | overrides)
        stages = {stage: _observe_stage(stage, config, patch) for stage in STAGE_NAMES}
    return Run(name, workdir, config, stages)


# the built-in run plans what TINY leaves (its plan stage times real epochs: balance's outputs, the evaluate keys)
PLANNED = {"train.input": "auto", "train.lr": "auto", "train.rare_crops": "auto", "plan.budget_minutes": 0.05,
           "plan.batches": [2, 4]}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    """The pipeline on tiny data: built-in shapes, a CamVid-layout folder outside the workspace, digits."""
    digits = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
    base = tmp_path_factory.mktemp("contract")
    folder = camvid_like_dataset(base / "incoming", 8, 4)
    return [
        observe_pipeline("builtin", base / "builtin", PLANNED),
        observe_pipeline("folder", base / "folder", folder_params(folder)),
        observe_pipeline("digits", base / "digits", digits | {"train.epochs": 1, "train.batch_size": 64}),
    ]


# ---------------------------------------------------------------------------------------------------------------
# the checks


def _entry(item: Any) -> str:
    return next(iter(item)) if isinstance(item, dict) else str(item)


def _resolve(text: str, params: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        node: Any = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


@functools.cache  # the mutation test checks the same recorded paths a hundred times
def _relative(path: Path, run: Run) -> Path | None:
    """A recorded path relative to the working folder, or absolute under data.root; None: elsewhere, or gone once
    the pipeline ran (a temporary file, a path relative to a directory descriptor): ignored."""
    absolute = path if path.is_absolute() else run.workdir / path
    if not absolute.exists():
        return None
    with contextlib.suppress(ValueError):
        return Path(absolute.resolve().relative_to(run.workdir.resolve()))
    root = (run.workdir / run.config.data.root).resolve()
    if root.is_dir() and _under(absolute.resolve(), [root]):
        return absolute.resolve()
    return None


def _pinned(run: Run, deps: Any) -> set[Path]:
    """The images and masks named in the manifests among ``deps`` (each row holds their sha256)."""
    paths = run.config.paths
    files: set[Path] = set()
    for manifest in (paths.manifest, paths.accepted):
        if any(_under(manifest, [dep]) for dep in deps):
            files |= _named_in(run, manifest)
    return files


@functools.cache
def _named_in(run: Run, manifest: Path) -> frozenset[Path]:
    rows = pd.read_csv(run.workdir / manifest, dtype=str)
    named = [Path(v) for column in ("image_path", "mask_path") for v in rows[column].dropna()]
    return frozenset(_relative(path, run) or path for path in named)


def check_stage(name: str, stage: dict[str, Any], runs: list[Run], src: Path = SRC) -> list[str]:
    """Every way stage ``name`` of dvc.yaml disagrees with what its code imports, reads, writes and looks up."""
    problems: list[str] = []
    deps = [_entry(d) for d in stage.get("deps", [])]
    params = [_entry(p) for p in stage.get("params", [])]
    outs = [_entry(o) for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])]
    interpolated = set(re.findall(r"\$\{([^}]+)\}", " ".join(deps + outs)))
    code = closure(name, src)
    used_deps: set[str] = set()
    used_params: set[str] = set()
    for module in sorted(code):
        if module not in {Path(d) for d in deps}:
            problems.append(f"stage '{name}': imports {module.as_posix()}, which is not among its deps")
    for dep in deps:
        if Path(dep) in code:
            used_deps.add(dep)
        elif dep.startswith(f"src/{PACKAGE}"):
            problems.append(f"stage '{name}': dep {dep} is not in its import closure (a package, or not imported)")
            used_deps.add(dep)  # reported once
    for run in runs:
        dump = run.config.model_dump(mode="json", by_alias=True)
        resolved_deps = {dep: Path(_resolve(dep, dump)) for dep in deps}
        resolved_outs = {out: Path(_resolve(out, dump)) for out in outs}
        cache = run.config.paths.cache
        pinned = _pinned(run, resolved_deps.values())
        observed = run.stages[name]
        for raw in sorted(observed.reads - observed.writes, key=str):
            path = _relative(raw, run)
            if path is None or _under(path, [cache, *map(Path, EXEMPT_READS)]) or (run.workdir / path).is_dir():
                continue  # a folder opened to list it or to walk below it is no read of a file
            covering = [d for d, p in resolved_deps.items() if _under(path, [p.resolve() if p.is_absolute() else p])]
            used_deps.update(covering)
            if covering or _under(path, list(resolved_outs.values())):
                continue
            if path in pinned:
                continue  # an image or mask pinned by its sha256 in a manifest the stage depends on
            problems.append(f"stage '{name}' ({run.name}): reads {path.as_posix()}, which no dep covers")
        written_here: set[str] = set()
        for raw in sorted(observed.writes, key=str):
            path = _relative(raw, run)
            if path is None or _under(path, [cache, Path("mlflow.db"), Path("mlartifacts")]):
                continue
            covering = [o for o, p in resolved_outs.items() if _under(path, [p])]
            written_here.update(covering)
            if not covering and not any(_under(p, [path]) for p in resolved_outs.values()):  # a parent folder made
                problems.append(f"stage '{name}' ({run.name}): writes {path.as_posix()}, which no out declares")
        for out in outs:
            if out not in written_here:  # DVC fails a stage whose declared output is missing
                problems.append(f"stage '{name}' ({run.name}): out {out} is not written, so `dvc repro` would fail")
        for key in sorted(observed.keys):
            plain = key.removesuffix(".*").removesuffix("*").rstrip(".")
            if not plain or any(plain == e or plain.startswith(e + ".") for e in EXEMPT_KEYS):
                continue
            covering = [p for p in params if plain == p or plain.startswith(p + ".")]
            used_params.update(covering)
            if covering or plain in interpolated:
                continue
            problems.append(f"stage '{name}' ({run.name}): reads params key '{plain}', which its params: do not cover")
    for dep in deps:
        if dep not in used_deps:
            problems.append(f"stage '{name}': dep {dep} is neither imported nor read by the stage (redundant)")
    for entry in params:
        if entry not in used_params:
            problems.append(f"stage '{name}': params entry '{entry}' covers no key the stage reads (redundant)")
    return problems


def dvc_stages() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


# ---------------------------------------------------------------------------------------------------------------
# the tests


def test_every_stage_matches_what_its_code_imports_reads_writes_and_looks_up(runs: list[Run]) -> None:
    stages = dvc_stages()
    assert list(stages) == list(STAGE_NAMES)
    problems = [problem for name, stage in stages.items() for problem in check_stage(name, stage, runs)]
    assert not problems, "\n".join(problems)


def _mutations() -> Iterator[tuple[str, str, str]]:
    for name, stage in dvc_stages().items():
        for kind in ("deps", "params", "outs", "metrics", "plots"):
            for item in stage.get(kind, []):
                yield name, kind, _entry(item)


def test_removing_any_entry_fails_a_check_naming_the_stage_and_the_entry(runs: list[Run]) -> None:
    """Every dep, params and out entry is needed: without it, some check names the stage and what is missing."""
    unnoticed = []
    messages = {}
    for name, kind, entry in _mutations():
        stage = copy.deepcopy(dvc_stages()[name])
        stage[kind] = [item for item in stage[kind] if _entry(item) != entry]
        found = check_stage(name, stage, runs)
        resolved = {_resolve(entry, run.config.model_dump(mode="json", by_alias=True)) for run in runs}
        named = [
            p for p in found
            if f"stage '{name}'" in p and (entry in p or any(r.lstrip("./") in p for r in resolved))
        ]  # fmt: skip
        if not named:
            unnoticed.append(f"{name} {kind} {entry}: {found}")
        else:
            messages[(name, kind, entry)] = named[0]
    assert not unnoticed, "removals no check noticed:\n" + "\n".join(unnoticed)
    for key in (("train", "deps", "src/visionflow/config.py"), ("evaluate", "params", "train.device")):
        print(f"{key}: {messages[key]}")  # shown with -s; the closing note quotes two


def test_a_stray_import_in_a_stage_is_named(runs: list[Run], tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    stage = src / PACKAGE / "stages" / "prepare.py"
    stage.write_text(stage.read_text() + "\nfrom visionflow import gate  # noqa: E402,F401\n")
    problems = check_stage("prepare", dvc_stages()["prepare"], runs, src)
    assert any("stage 'prepare': imports src/visionflow/gate.py" in p for p in problems), problems
    assert any("src/visionflow/metrics.py" in p for p in problems), "its own imports are followed too"


def test_the_closure_follows_imports_inside_functions_and_stops_at_the_cli() -> None:
    train = closure("train")
    assert Path("src/visionflow/checkpoint.py") in train and Path("src/visionflow/stages/__init__.py") in train
    assert Path("src/visionflow/cli.py") in train
    assert Path("src/visionflow/predict.py") not in train, "predict is imported by another CLI command only"
    register = closure("register")
    assert Path("src/visionflow/serving.py") in register and Path("src/visionflow/gate.py") in register
