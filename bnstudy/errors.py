"""What a user can get wrong or meet on disk. Each ends a command with one line `bnstudy: error: ...` and
exit code 2 (cli.main), never a traceback. Light on purpose: the command line imports it before torch."""


class ConfigError(ValueError):
    """A configuration a user wrote is wrong; the message says what and where."""


class DataError(RuntimeError):
    """The dataset is missing, corrupt or unusable; the message says what to do."""


class RecordError(RuntimeError):
    """A file of a run folder is unreadable, torn, incomplete or inconsistent; the message names the file."""


USER_ERRORS = (ConfigError, DataError, RecordError)
