"""The project's licence and every shipped model's own licence are stated where a user looks for them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFEST = yaml.safe_load((REPO / "models" / "manifest.yaml").read_text(encoding="utf-8"))
# licences a shipped model may carry: vigil's own, a permissive one that AGPL-3.0 code may ship beside, or GPL-3.0
# (both GPL-3.0 and AGPL-3.0 section 13 allow combining the two: the YOLOv5-face detector is a GPL-3.0 fine-tune)
KNOWN_LICENCES = {"AGPL-3.0-only", "GPL-3.0-only", "CC0-1.0", "Apache-2.0", "MIT"}


def test_the_project_is_agpl_because_it_runs_ultralytics():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "AGPL-3.0-only"
    assert (REPO / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("GNU AFFERO GENERAL PUBLIC LICENSE")


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_every_shipped_model_names_its_licence_in_the_manifest_and_its_card(name):
    entry = MANIFEST["models"][name]
    assert entry.get("licence") in KNOWN_LICENCES, f"{name}: licence {entry.get('licence')!r}"
    assert entry.get("licence_note"), f"{name}: licence_note says where the model comes from and its data's terms"
    card = (REPO / "models" / entry["card"]).read_text(encoding="utf-8")
    assert entry["licence"] in card, f"{entry['card']} does not state the licence {entry['licence']}"
