"""Does the model transfer? CamVid split by sequence, so that val shares no scene with train: the defaults before the
honest-splits issue against today's, and today's at growing budgets.

    python benchmarks/generalise.py --json benchmarks/results/generalise.json   # about 2.5 h on a 2-core Zen 5

The split (built in a scratch folder of hard links to ``--camvid``'s files, copies where the file system refuses
links; prepare reads no file that resolves outside the data root, so symbolic links would not do): train holds
every frame of the ``--train-sequences`` (0001TP and 0016E5: 367 frames), val every frame of the
``--val-sequences`` (0006R0: 101 frames), whichever folder of CamVid they come from. CamVid's own val (101 frames
of 0016E5, whose scenes 204 train frames share) flatters a model; this split does not.

Arms, each every key ``auto`` with params changed only in ``data`` and ``plan.budget_minutes``:

- ``old``: the pipeline at ``--old-ref`` (default ``ef4e418``, the last commit before the honest-splits issue),
  run from a git worktree of that commit with this environment's packages, its own ``visionflow`` stage commands
  in a scratch directory, at the largest budget; its model is then scored by today's evaluate (the same per-image
  scores and corruptions as the other arms). ``--skip-old`` leaves it out; ``--old-work DIR`` keeps its trained
  model in DIR, and a later run with the same commit and budget scores it again without training; ``--old-json``
  takes it from an earlier report of this script on the same kind of machine (the per-image scores compared).
- ``new-<budget>``: today's defaults at each of ``--budgets`` minutes (10, 20 and 40), with ``data.groups`` set to
  the sequence (and ``--set`` overrides, to weigh a candidate default against the old one).

The report: per arm the plan table, the epochs, val mIoU, the IoU of the four rarest classes (by train pixel share)
and the mean score under corruptions; whether val mIoU rises with the budget; and, at the largest budget, new minus
old: the mean per-image mIoU difference with its 95% paired bootstrap interval.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _camvid as common
from plan import AUTO, USER_TRACKING_URI, compare, difference_line, extra, run_arm

SEQUENCE = r"^(?P<group>[0-9A-Za-z]+)_"  # CamVid names frames <sequence>_<frame>.png
OLD_REF = "ef4e418"  # the last commit before the honest-splits issue (issue 24)
SPLIT_DIRS = {"train": "trainannot", "val": "valannot", "test": "testannot"}  # CamVid's image and label folders


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[10.0, 20.0, 40.0], help="minutes, rising")
    parser.add_argument("--train-sequences", nargs="+", default=["0001TP", "0016E5"])
    parser.add_argument("--val-sequences", nargs="+", default=["0006R0"])
    parser.add_argument("--old-ref", default=OLD_REF, help="the commit whose defaults the old arm runs")
    parser.add_argument("--skip-old", action="store_true", help="only today's defaults at each budget")
    parser.add_argument("--old-work", type=Path, default=None,
                        help="where the old arm trains and is kept; a model there from the same --old-ref and budget "
                             "is scored again without training (default: a scratch folder)")  # fmt: skip
    parser.add_argument("--old-json", type=Path, default=None,
                        help="the old arm from an earlier report of this script (its arm 'old', same split) instead "
                             "of training it: benchmarks/results/generalise_old_xeon.json")  # fmt: skip
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params overrides (YAML values) for today's arms: balance.method=none")  # fmt: skip
    common.add_camvid_option(parser)
    common.add_json_option(parser)
    return parser.parse_args()


def sequence_split(camvid: Path, root: Path, train: list[str], val: list[str]) -> dict[str, dict[str, int]]:
    """Every CamVid frame of the ``train`` and ``val`` sequences under ``root``'s train/ trainannot/ val/
    valannot/, whichever CamVid folder each came from; returns the frames per split and sequence."""
    wanted = {s: "train" for s in train} | {s: "val" for s in val}
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for split in ("train", "val"):
        for folder in (split, SPLIT_DIRS[split]):
            (root / folder).mkdir(parents=True, exist_ok=True)
    for images, labels in SPLIT_DIRS.items():
        if not (camvid / images).is_dir():
            continue
        for image in sorted((camvid / images).iterdir()):
            sequence = image.name.split("_", 1)[0]
            split = wanted.get(sequence)
            label = camvid / labels / image.name
            if split is None or not label.is_file():
                continue
            _link(image, root / split / image.name)
            _link(label, root / SPLIT_DIRS[split] / image.name)
            counts[split][sequence] = counts[split].get(sequence, 0) + 1
    empty = [s for s in (*train, *val) if not counts[wanted[s]].get(s)]
    if empty:
        raise SystemExit(f"no frames of sequence(s) {', '.join(empty)} in {camvid}")
    return counts


def _link(source: Path, target: Path) -> None:
    """A hard link to ``source`` (no bytes copied), or a copy where the two folders are on different file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _train_old(ref: str, data: dict[str, Any], budget: float, work: Path) -> None:
    """The pipeline at ``ref`` trained in ``work`` by its own stage commands, from a git worktree of it; a work
    folder that already holds a model trained by the same commit at the same budget is kept (``--old-work``)."""
    import yaml

    done, wanted = work / "trained.json", {"ref": ref, "budget_minutes": budget}
    if done.is_file() and json.loads(done.read_text()) == wanted and (work / "data" / "model" / "model.pt").is_file():
        print(f"generalise: the old arm's model in {work} was trained by {ref} at {budget:g} min: kept")
        return
    with tempfile.TemporaryDirectory(prefix="vf-generalise-old-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(common.REPO), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)  # fmt: skip
        try:
            params = yaml.safe_load((tree / "params.yaml").read_text())
            for key, value in {**data, "plan.budget_minutes": budget}.items():
                section, name = key.split(".", 1)
                params[section][name] = value
            params["tracking"]["experiment"] = "generalise-benchmark-old"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            if not USER_TRACKING_URI:  # an earlier arm's store (mlflow exports it): this arm has its own, in work/
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            env = os.environ | {"PYTHONPATH": str(tree / "src")}
            for stage in ("prepare", "validate", "balance", "plan", "train"):
                subprocess.run([sys.executable, "-m", "visionflow.cli", stage], cwd=work, env=env, check=True)
            done.write_text(json.dumps(wanted) + "\n")
        finally:
            subprocess.run(["git", "-C", str(common.REPO), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)  # fmt: skip


def old_arm(ref: str, data: dict[str, Any], budget: float, work: Path | None) -> dict[str, Any]:
    """The pipeline at ``ref`` (its code and params.yaml, every key as it shipped but ``data`` and the budget), run
    stage by stage with its own commands (:func:`_train_old`); then its model scored by today's prepare, validate
    and evaluate, so that both arms are compared by the same per-image scores. ``work``: where it trains and is
    kept (a run that stops after the old arm's training keeps its model there); None: a scratch folder."""
    from visionflow.handoffs import ModelMeta
    from visionflow.stages import evaluate

    with tempfile.TemporaryDirectory(prefix="vf-generalise-old-work-") as scratch:
        work = work or Path(scratch)
        _train_old(ref, data, budget, work)
        plan_md = (work / "data" / "plan" / "plan.md").read_text()
        home = Path.cwd()
        os.chdir(work)
        try:
            config = common.load_params(data | {"tracking.experiment": "generalise-benchmark-old"})
            common.prepare_and_validate(config)  # today's manifest of the same files, for today's evaluate
            metrics = evaluate.run(config).val
            meta = ModelMeta.read(config.paths)
            return {
                "arm": "old",
                "ref": ref,
                "plan": plan_md,
                "budget_minutes": budget,
                "train_minutes": round(common.training_seconds(config) / 60, 2),
                "timed": "the train and val passes (history.csv)",
                "epochs": meta.epochs,
                "best_epoch": meta.epoch,
                "val_miou": common.score(metrics["miou"]),
                "corruption_mean": common.score(metrics.get("corruption_mean")),
                "per_class_iou": common.per_class_iou(metrics),
                "per_image": common.per_image(config),
            }
        finally:
            os.chdir(home)


def earlier_old(path: Path | None, budget: float) -> dict[str, Any] | None:
    """The old arm of an earlier report (``--old-json``) trained at ``budget`` minutes; None where none is given."""
    if path is None:
        return None
    arms = [arm for arm in json.loads(path.read_text())["arms"] if arm["arm"] == "old"]
    if not arms:
        raise SystemExit(f"{path} holds no old arm (an arm named 'old')")
    if arms[0]["budget_minutes"] != budget:
        raise SystemExit(f"{path}: its old arm trained {arms[0]['budget_minutes']:g} min, not the {budget:g} compared")
    print(
        f"generalise: the old arm from {path} ({arms[0]['ref']}, {arms[0]['budget_minutes']:g} min), not trained again"
    )
    return arms[0]


def print_report(report: dict[str, Any]) -> None:
    arms = report["arms"]
    for arm in arms:
        print(f"\n## {arm['arm']}\n\n{arm['plan']}")
    rare = report["rarest"]
    print(f"\n| arm | budget min | training min | epochs | val mIoU | {' | '.join(rare)} | corruption mean |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(rare) + "---:|")
    for arm in arms:
        iou = " | ".join(str(arm["per_class_iou"].get(name)) for name in rare)
        print(f"| {arm['arm']} | {arm['budget_minutes']:g} | {arm['train_minutes']} | {arm['epochs']} | "
              f"{arm['val_miou']} | {iou} | {arm['corruption_mean']} |")  # fmt: skip
    print(f"\nval mIoU rises with the budget: {'yes' if report['rises'] else 'no'}")
    diff = report.get("comparison")
    if diff:
        print(difference_line(diff["new"], "old", diff))


def main() -> int:
    args = parse_args()
    if not common.camvid_found(args):
        return 2
    budgets = sorted(args.budgets)
    with tempfile.TemporaryDirectory(prefix="vf-generalise-split-") as scratch:
        split_root = Path(scratch) / "camvid-by-sequence"
        counts = sequence_split(args.camvid, split_root, args.train_sequences, args.val_sequences)
        print(f"generalise: frames per split and sequence {counts}")
        data = {"data.source": "folder", "data.root": str(split_root), "data.preset": "camvid"}
        base = data | {"data.groups": {"pattern": SEQUENCE, "column": None}}
        base |= {"tracking.experiment": "generalise-benchmark"}
        # the old arm first (it fails early if the old commit cannot run here), then today's at the largest budget
        # (the comparison is whole), then the smaller budgets; each arm is saved as it ends beside --json
        # (<name>.partial.json), so a stopped run keeps what it finished
        partial = args.json.with_suffix(".partial.json") if args.json else None
        old = (
            None
            if args.skip_old
            else earlier_old(args.old_json, budgets[-1]) or old_arm(args.old_ref, data, budgets[-1], args.old_work)
        )
        common.write_json(partial, {"frames": counts, "arms": [old] if old else []})
        arms: list[dict[str, Any]] = []
        for budget in reversed(budgets):
            arm = run_arm(f"new-{budget:g}", base | AUTO | {"plan.budget_minutes": budget} | extra(args))
            arms.insert(0, arm | {"budget_minutes": budget})
            common.write_json(partial, {"frames": counts, "arms": ([old] if old else []) + arms})
    newest = arms[-1]
    report: dict[str, Any] = {
        "settings": common.settings(args),
        "frames": counts,
        "rarest": newest["rarest"],
        "arms": ([old] if old else []) + arms,
        "rises": all(a["val_miou"] < b["val_miou"] for a, b in itertools.pairwise(arms)),
    }
    if old:
        report["comparison"] = compare(newest, old) | {"new": newest["arm"]}
    print_report(report)
    common.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
