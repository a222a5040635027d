"""The one exception type for user mistakes: bad configs, missing or corrupt files, impossible requests.

The command line turns a ``UserError`` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in what the user asked for; the message is one line naming the field or file."""
