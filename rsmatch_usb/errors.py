"""The one exception type that command-line tools turn into a single error line."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a dataset, a device.

    The message names the problem and the fix. Command-line entry points print it
    as one ``error:`` line and exit non-zero instead of showing a traceback.
    """
