"""`vigil enroll WATCHLIST [--config C] [--strict]`: embed every photo, report the ones that cannot be used.

Exit code 1 when any person is left without a usable photo (that person would not be watched); the photo files are
checked before the models load, so a watchlist whose people all lack a readable photo fails at once.
"""

from __future__ import annotations

import argparse
import sys

from vigil.config import data_dir_problem
from vigil.errors import ConfigError
from vigil.filemode import file_creation_mode
from vigil.runtime import build_analyzer, enroll, load_config_or_default, resolve_models
from vigil.watchlist import file_problems, load_watchlist, unusable_people


def run_cli(args: argparse.Namespace) -> int:
    config = load_config_or_default(args.config)
    problem = data_dir_problem(config.data_dir)
    if problem:
        raise ConfigError(f"data_dir: {problem}")
    watchlist = load_watchlist(args.watchlist)
    problems = file_problems(watchlist)
    unusable = unusable_people(watchlist, problems)
    if unusable:  # no model needed to know these people cannot be enrolled
        for photo_problem in problems:
            print(f"skipped  {photo_problem}")
        return _report_unenrolled(args, unusable, len(watchlist.people))
    with file_creation_mode(config.data_access):
        models = resolve_models(config)
        result = enroll(config, args.watchlist, build_analyzer(config, models), models, strict=args.strict)
    for person in result.people:
        print(
            f"enrolled {person.id:<24} {person.name:<28} {person.list.value:<5} photos={len(person.photo_embeddings)}"
        )
    for photo_problem in result.problems:
        print(f"skipped  {photo_problem}")
    print(
        f"{len(result.people)} people enrolled; {result.photos_embedded} photos embedded, "
        f"{result.photos_from_cache} from cache, {len(result.problems)} skipped"
    )
    return _report_unenrolled(args, result.unenrolled, len(watchlist.people)) if result.unenrolled else 0


def _report_unenrolled(args: argparse.Namespace, unenrolled: list[str], people: int) -> int:
    print(
        f"vigil: error: {args.watchlist}: {len(unenrolled)} of {people} people have no usable photo and are not "
        f"watched: {', '.join(unenrolled)}",
        file=sys.stderr,
    )
    return 1
