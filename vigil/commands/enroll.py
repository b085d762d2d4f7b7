"""`vigil enroll WATCHLIST [--config C] [--strict]`: embed every photo, report the ones that cannot be used."""

from __future__ import annotations

import argparse

from vigil.runtime import build_analyzer, enroll, load_config_or_default, resolve_models


def run_cli(args: argparse.Namespace) -> int:
    config = load_config_or_default(args.config)
    models = resolve_models(config)
    result = enroll(config, args.watchlist, build_analyzer(config, models), models, strict=args.strict)
    for person in result.people:
        print(
            f"enrolled {person.id:<24} {person.name:<28} {person.list.value:<5} photos={len(person.photo_embeddings)}"
        )
    for problem in result.problems:
        print(f"skipped  {problem}")
    print(
        f"{len(result.people)} people enrolled; {result.photos_embedded} photos embedded, "
        f"{result.photos_from_cache} from cache, {len(result.problems)} skipped"
    )
    return 0
