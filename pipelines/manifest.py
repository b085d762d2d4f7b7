"""Register a shipped model file in ``models/manifest.yaml`` (sha256 computed here, never typed by hand).

    python -m pipelines.manifest add --name NAME --kind recognizer --file recognizer/x.onnx --meta meta.yaml [--default]
    python -m pipelines.manifest thresholds --name NAME --flip CALIB_FLIP.json --single CALIB_SINGLE.json

``--meta`` is a YAML mapping with the entry's other fields (input_size, format, colour_order, normalisation,
embedding_size, alignment_template, keypoints, card, ...). Existing entries of the same name are replaced.

``thresholds`` writes a recognizer's calibrated match thresholds (``match_threshold`` for one chip per face,
``match_threshold_flip_average`` for the runtime's default) from two ``pipelines.recognizer.calibrate`` reports:
the cosine at FAR 1e-4 on clean probes, with a source note that repeats the command and the other operating points.
A report made with another file (its model label carries the checksum) or the wrong mode is refused.
"""

from __future__ import annotations

import argparse
import json
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
    manifest_path.write_text(
        header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None), encoding="utf-8"
    )
    return entry


OPERATING_FAR = 1e-4


def threshold_fields(entry: dict, flip_report: dict, single_report: dict) -> dict:
    """The four ``match_threshold*`` fields for a manifest ``entry`` from its calibration reports."""
    fields: dict[str, float | str] = {}
    for key, report, flip, mode in (
        ("match_threshold", single_report, False, "one chip per face"),
        (
            "match_threshold_flip_average",
            flip_report,
            True,
            "each face embedded with its mirror image (the runtime default)",
        ),
    ):
        label = str(report.get("model", ""))
        if f"@{entry['sha256'][:12]}" not in label:
            raise SystemExit(f"{key}: the report is for {label!r}, not this file (sha256 {entry['sha256'][:12]}...)")
        if bool(report.get("flip_average")) is not flip or report.get("probes") != "clean":
            raise SystemExit(f"{key}: expected a report with clean probes and flip_average {flip}")
        rows = {float(row["far"]): row for row in report["thresholds"]}
        chosen = rows[OPERATING_FAR]
        others = "; ".join(
            f"FAR {far:.0e}: {row['threshold']:.4f}, TAR {row['tar']:.3f}"
            for far, row in sorted(rows.items(), reverse=True)
            if far != OPERATING_FAR
        )
        fields[key] = round(float(chosen["threshold"]), 4)
        refiner = ", the landmark refiner" if report.get("refine_landmarks") else " (its own landmarks)"
        fields[f"{key}_source"] = (
            f"cosine at FAR {OPERATING_FAR:.0e} (TAR {chosen['tar']:.3f}) over {report['impostor_pairs']:,} LFW "
            "impostor pairs "
            f"({report['people']} people) through vigil's own detector ({report['detector']}){refiner}, aligner and "
            "the template above, "
            f"{mode}: {report.get('command', 'python -m pipelines.recognizer.calibrate')} ({others})"
        )
    return fields


def set_thresholds(root: Path, name: str, flip_report: dict, single_report: dict) -> dict:
    manifest_path = root / MANIFEST_NAME
    manifest = yaml.safe_load(manifest_path.read_text())
    entry = (manifest.get("models") or {}).get(name)
    if entry is None or entry.get("kind") != "recognizer":
        raise SystemExit(f"{manifest_path}: no recognizer named {name!r}")
    entry.update(threshold_fields(entry, flip_report, single_report))
    return add_entry(
        root,
        name,
        entry["kind"],
        entry["file"],
        {k: v for k, v in entry.items() if k not in ("kind", "file", "sha256", "size_bytes")},
        make_default=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", choices=["detector", "recognizer", "landmarks"], required=True)
    add.add_argument("--file", required=True, help="path relative to models/")
    add.add_argument("--meta", type=Path, help="YAML mapping of the entry's other fields")
    add.add_argument("--default", action="store_true")
    add.add_argument("--root", type=Path, default=models_dir())
    thresholds = sub.add_parser("thresholds", help="a recognizer's calibrated match thresholds from calibrate reports")
    thresholds.add_argument("--name", required=True)
    thresholds.add_argument("--flip", type=Path, required=True, help="calibrate report, flip-averaged, clean probes")
    thresholds.add_argument(
        "--single", type=Path, required=True, help="calibrate report, --no-flip-average, clean probes"
    )
    thresholds.add_argument("--root", type=Path, default=models_dir())
    args = parser.parse_args(argv)
    if args.command == "thresholds":
        reports = [json.loads(path.read_text()) for path in (args.flip, args.single)]
        entry = set_thresholds(args.root, args.name, *reports)
        print(
            f"{args.name}: match_threshold {entry['match_threshold']}, flip-averaged "
            f"{entry['match_threshold_flip_average']}"
        )
        return 0
    meta = yaml.safe_load(args.meta.read_text()) if args.meta else {}
    entry = add_entry(args.root, args.name, args.kind, args.file, meta or {}, args.default)
    print(f"{args.name}: sha256 {entry['sha256']} ({entry['size_bytes']} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
