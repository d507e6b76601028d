"""MkDocs hook: the configuration page's reference table, written from visionflow's typed params models and their
field comments (``visionflow.reference``) with the values params.yaml ships, so each key is described once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from visionflow import reference

MARKER = "<!-- params reference -->"


def on_page_markdown(markdown: str, page: Any, config: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    params = Path(config["config_file_path"]).parent / "params.yaml"
    return markdown.replace(MARKER, reference.markdown(yaml.safe_load(params.read_text(encoding="utf-8"))))
