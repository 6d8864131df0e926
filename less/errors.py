"""Errors the user can fix. The pipeline prints them as one line and exits non-zero."""


class LessError(Exception):
    """Base class: bad config, bad input file, missing cached artifact."""


class ConfigError(LessError):
    """A config value is wrong; the message names the key."""


class DataError(LessError):
    """An input file is wrong; the message names the file (and line)."""


class CacheMiss(LessError):
    """A stage was skipped but its artifact is not in the cache."""
