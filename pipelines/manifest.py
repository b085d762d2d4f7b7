"""Register a shipped model file in ``models/manifest.yaml`` (sha256 computed here, never typed by hand).

    python -m pipelines.manifest add --name NAME --kind recognizer --file recognizer/x.onnx --meta meta.yaml [--default]

``--meta`` is a YAML mapping with the entry's other fields (input_size, format, colour_order, normalisation,
embedding_size, alignment_template, keypoints, card, ...). Existing entries of the same name are replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from vigil.models import MANIFEST_NAME, sha256_of
from vigil.paths import models_dir


def add_entry(root: Path, name: str, kind: str, file: str, meta: dict, make_default: bool) -> dict:
    manifest_path = root / MANIFEST_NAME
    manifest = yaml.safe_load(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest = manifest or {}
    path = root / file
    if not path.is_file():
        raise SystemExit(f"{path}: model file not found")
    entry = {"kind": kind, "file": file, "sha256": sha256_of(path), "size_bytes": path.stat().st_size, **meta}
    manifest.setdefault("models", {})[name] = entry
    if make_default:
        manifest.setdefault("defaults", {})[kind] = name
    header = "# Shipped models. Written by `python -m pipelines.manifest add`; checksums are verified at load.\n"
    manifest_path.write_text(header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None), encoding="utf-8")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", choices=["detector", "recognizer"], required=True)
    add.add_argument("--file", required=True, help="path relative to models/")
    add.add_argument("--meta", type=Path, help="YAML mapping of the entry's other fields")
    add.add_argument("--default", action="store_true")
    add.add_argument("--root", type=Path, default=models_dir())
    args = parser.parse_args(argv)
    meta = yaml.safe_load(args.meta.read_text()) if args.meta else {}
    entry = add_entry(args.root, args.name, args.kind, args.file, meta or {}, args.default)
    print(f"{args.name}: sha256 {entry['sha256']} ({entry['size_bytes']} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
