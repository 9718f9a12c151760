"""The one exception type users see: a message naming the file, key or case at fault."""


class LvdrError(Exception):
    """Bad input or configuration; the CLI prints the message without a traceback."""


class ConfigError(LvdrError):
    """A configuration value or key is invalid."""


class DataError(LvdrError):
    """An input file or table is unreadable or inconsistent."""
