"""The shape of a few-shot episode, and its command-line flags: the one definition that the benchmark
(``vigil eval fewshot``) and meta-training (``pipelines.meta.train``) both read, so that the episodes a method is
trained on and those it is scored on cannot drift apart.

Standard library only: ``vigil.cli`` builds its parser from it without importing numpy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

# The geometry fields every command exposes as a flag of the same name; K has its own flag per command (the
# benchmark takes a list of K, training draws K up to a largest one).
FLAG_FIELDS = ("n_way", "queries_per_identity", "impostor_identities", "impostor_queries_per_identity")


@dataclass(frozen=True)
class Geometry:
    """One watchlist: ``n_way`` people enrolled from ``k_shot`` clean photos each; up to ``queries_per_identity``
    degraded camera views of other photos of each of them, and up to ``impostor_queries_per_identity`` views of
    each of up to ``impostor_identities`` people not on the list (``vigil.eval.episodes``)."""

    n_way: int = 20
    k_shot: int = 1
    queries_per_identity: int = 5
    impostor_identities: int = 100
    impostor_queries_per_identity: int = 2

    def __post_init__(self) -> None:
        if (
            self.n_way < 2
            or self.k_shot < 1
            or self.queries_per_identity < 1
            or self.impostor_identities < 0
            or self.impostor_queries_per_identity < 1
        ):
            raise ValueError(f"episode geometry out of range: {self}")

    def with_k_shot(self, k_shot: int) -> Geometry:
        """The same watchlist enrolled from ``k_shot`` photos per person."""
        return replace(self, k_shot=int(k_shot))


def add_geometry_arguments(parser: argparse.ArgumentParser, defaults: Geometry) -> None:
    """``--n-way``, ``--queries-per-identity``, ``--impostor-identities``, ``--impostor-queries-per-identity``,
    defaulting to ``defaults``; :func:`geometry_from_args` reads them back."""
    for name in FLAG_FIELDS:
        default = getattr(defaults, name)
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=default, help=f"episode geometry (default {default})"
        )


def geometry_from_args(args: argparse.Namespace, k_shot: int) -> Geometry:
    """The geometry the flags of :func:`add_geometry_arguments` name, enrolled from ``k_shot`` photos; ValueError
    (naming the geometry) when out of range."""
    return Geometry(k_shot=k_shot, **{name: getattr(args, name) for name in FLAG_FIELDS})
