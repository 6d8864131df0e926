"""Errors the user can fix. The pipeline prints them as one line and exits non-zero."""


class LessError(Exception):
    """Base class: bad config, bad input file, missing cached artifact."""


class ConfigError(LessError):
    """A config value is wrong; the message names the key."""


class DataError(LessError):
    """An input file is wrong; the message names the file (and line)."""


def require(ok: bool, msg: str) -> None:
    """Raise ``ConfigError(msg)`` unless ``ok``: the one-line checks of a config slice."""
    if not ok:
        raise ConfigError(msg)


class CacheMiss(LessError):
    """A stage was skipped but its artifact is not in the cache."""
