"""User-facing errors: one clear line naming the file, row or field; the CLI prints it and exits non-zero."""


class VigilError(Exception):
    """An error caused by the user's input (config, watchlist, image, video, model file, camera).

    The message is one line that names what is wrong and where, e.g.
    ``config.yaml: cameras[0].fps_cap: must be > 0, got -1``.
    """


class ModelError(VigilError):
    """A model file is missing, corrupt, has the wrong checksum or the wrong shape."""


class ConfigError(VigilError):
    """A config or watchlist file is missing or invalid."""
