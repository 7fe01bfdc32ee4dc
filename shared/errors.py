"""The one exception type that the CLI turns into a one-line message and exit status 2."""


class UserError(Exception):
    """A problem with what the user gave (a path, a file's content, an option value).

    The message is one line that names the file or option and the problem; the CLI prints it
    without a traceback (``--verbose`` shows one) and exits with status 2.
    """

    exit_code = 2


def suggest(word: str, choices) -> str:
    """' (did you mean X?)' for the closest of `choices`, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
