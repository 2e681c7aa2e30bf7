"""The one exception type for bad user input; rsmatch-usb's command-line tools turn it into a single error line."""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a dataset, a device.

    The message names the problem and the fix. rsmatch-usb's command-line entry
    points print it as one ``error:`` line and exit non-zero instead of showing a
    traceback; elsewhere (RSMatch exported into USB) it is an ordinary exception.
    """

    def __str__(self):
        text = super().__str__()
        # torch's DataLoader re-raises a worker's exception as the same type, its message
        # followed by the worker's traceback; the user needs the message only.
        if "\nOriginal Traceback" in text:
            return text.rstrip().splitlines()[-1].split("UserError: ", 1)[-1]
        return text
