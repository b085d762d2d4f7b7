"""User-facing errors: one clear line naming the file, row or field; the CLI prints it and exits non-zero."""

import sys
from collections.abc import Callable


class VigilError(Exception):
    """An error caused by the user's input (config, watchlist, image, video, model file, camera).

    The message is one line that names what is wrong and where, e.g.
    ``config.yaml: cameras[0].fps_cap: must be > 0, got -1``.
    """


class ModelError(VigilError):
    """A model file is missing, corrupt, has the wrong checksum or the wrong shape."""


class ConfigError(VigilError):
    """A config or watchlist file is missing or invalid."""


def run_reporting_errors(body: Callable[[], int | None]) -> int:
    """Run a command's ``body``; a :class:`VigilError` becomes ``error: <its line>`` on stderr and exit code 2.

    For ``main()`` functions of offline pipelines, so a bad input ends in one line, not a traceback.
    """
    try:
        return body() or 0
    except VigilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
