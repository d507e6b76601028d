"""The documentation: a short README, an MkDocs site that builds strictly, and a params reference that describes
every key from the typed models."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import BIN, REPO
from visionflow import reference
from visionflow.config import Config, load_config

README_LINES = 200


def _flat_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys.add(dotted)
        if isinstance(value, dict):
            keys |= _flat_keys(value, dotted + ".")
    return keys


def test_readme_is_short_and_its_links_reach_the_docs() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_LINES
    targets = re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", text)
    assert targets, "the README points to the documentation"
    missing = [t for t in targets if not (REPO / t).is_file()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_site_builds_strictly_with_the_reference_and_readme_sections(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)], cwd=REPO, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "python3 dev.py repro" in home and "--8&lt;--" not in home, "the README's quickstart is included"
    page = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "params reference" not in page, "the hook replaced its marker"
    for key in ("train.augment.hflip", "data.masks.colors", "register.gate_split", "plan.budget_minutes"):
        assert f"<code>{key}</code>" in page
    for html in site.rglob("*.html"):  # readable offline: no web fonts or scripts from a CDN
        assert not re.search(r"(src|href)=\"https?://(fonts\.googleapis|cdn\.|unpkg)", html.read_text("utf-8"))


def test_every_params_key_is_in_the_reference_with_a_meaning_and_the_shipped_default() -> None:
    shipped = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    sections = reference.keys(shipped)
    rows = {row.name: row for _, _, section in sections for row in section}
    assert not [name for name, row in rows.items() if not row.meaning], "every field has a comment in config.py"
    for key in _flat_keys(shipped):  # each key is in the reference, or an entry of a mapping that is
        parent = key.rpartition(".")[0]
        assert key in rows or (parent in rows and "mapping" in rows[parent].allowed) or not parent, key
    assert {name for name, _, _ in sections if "." not in name} == set(shipped), "a section per params section"
    config = load_config(REPO / "params.yaml")
    assert rows["train.epochs"].default == "auto" and config.train.epochs == "auto"
    assert rows["project.seed"].default == str(config.project.seed)
    assert rows["train.augment.noise"].default == str(Config().train.augment.noise)  # type: ignore[union-attr]
    assert rows["data.builtin.kind"].allowed == "shapes | wires"
    assert "(> 0" in rows["train.grad_clip"].allowed
