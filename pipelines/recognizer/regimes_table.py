"""The model card's regime table: validation (CelebA held-out identities) and LFW (clean, degraded) per regime.

    python -m pipelines.recognizer.regimes_table --runs work/recognizer/regimes_cpu_equal \
        --lfw work/recognizer/lfw_regimes [--md OUT.md]

Reads ``<runs>/<regime>/metrics.json`` (written by :mod:`pipelines.recognizer.finetune`) and the ``vigil eval lfw``
reports ``<lfw>/<name>_{clean,degraded}.json`` (``name`` is ``source`` or a regime). A missing file leaves its cells
as ``-``; nothing is estimated.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

SOURCE = "source"


@dataclass(frozen=True)
class RegimeRow:
    name: str
    trainable_parameters: int | None
    best_epoch: int | None
    train_wall_s: float | None
    samples_per_s: float | None
    val_clean_auc: float | None
    val_degraded_auc: float | None
    lfw_clean: dict | None
    lfw_degraded: dict | None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_row(name: str, metrics: dict | None, validation: dict, lfw: Path) -> RegimeRow:
    """One row; for the source model ``metrics`` is None and ``validation`` is the epoch-0 (source) evaluation."""
    speeds = [h["train_samples_per_s"] for h in (metrics or {}).get("history", []) if "train_samples_per_s" in h]
    return RegimeRow(
        name=name,
        trainable_parameters=None if metrics is None else metrics["trainable_parameters"],
        best_epoch=None if metrics is None else metrics["best_epoch"],
        train_wall_s=None if metrics is None else metrics["train_wall_s"],
        samples_per_s=sum(speeds) / len(speeds) if speeds else None,
        val_clean_auc=validation.get("clean_auc"),
        val_degraded_auc=validation.get("degraded_auc"),
        lfw_clean=_read_json(lfw / f"{name}_clean.json"),
        lfw_degraded=_read_json(lfw / f"{name}_degraded.json"),
    )


def build_rows(runs: Path, lfw: Path, names: list[str]) -> list[RegimeRow]:
    """The source row (its validation: epoch 0 of the first regime that has one) and one row per regime (best epoch)."""
    metrics = {n: _read_json(runs / n / "metrics.json") for n in names}
    source_val: dict = next((m["history"][0] for m in metrics.values() if m and m.get("history")), {})
    rows = [load_row(SOURCE, None, source_val, lfw)]
    rows += [load_row(name, m, (m or {}).get("best", {}), lfw) for name, m in metrics.items()]
    return rows


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _lfw_cells(report: dict | None) -> list[str]:
    if report is None:
        return ["-", "-", "-"]
    return [
        f"{100 * report['accuracy_mean']:.2f} ± {100 * report['accuracy_std']:.2f}",
        f"{100 * report['tar_at_far_1e-3']:.2f}",
        f"{report['auc']:.4f}",
    ]


def markdown(rows: list[RegimeRow]) -> str:
    header = (
        "| model | trainable params | best epoch | train s | samples/s | val clean AUC | val degraded AUC "
        "| LFW clean acc % | clean TAR@1e-3 % | clean AUC | LFW degraded acc % | degraded TAR@1e-3 % | degraded AUC |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = [
            r.name,
            _num(r.trainable_parameters, ","),
            _num(r.best_epoch, "d"),
            _num(r.train_wall_s, ".0f"),
            _num(r.samples_per_s, ".0f"),
            _num(r.val_clean_auc, ".4f"),
            _num(r.val_degraded_auc, ".4f"),
            *_lfw_cells(r.lfw_clean),
            *_lfw_cells(r.lfw_degraded),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return header + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="finetune --out folder (one sub-folder per regime)")
    ap.add_argument("--lfw", type=Path, required=True, help="folder of vigil eval lfw reports <name>_<variant>.json")
    ap.add_argument("--regimes", nargs="*", help="default: every sub-folder of --runs, sorted")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    names = args.regimes or sorted(p.name for p in args.runs.iterdir() if p.is_dir())
    table = markdown(build_rows(args.runs, args.lfw, names))
    print(table, end="")
    if args.md:
        args.md.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
