"""The one exception type that the command line turns into a one-line message."""


class PeftlabError(ValueError):
    """Invalid input or a request peftlab cannot carry out.

    The message is a single line that names what was wrong, the value received
    and what would be valid. The command line prints it as ``error: ...`` and
    exits with status 2, without a traceback.
    """

    exit_code = 2


def one_of(values) -> str:
    """Format a collection of valid values for an error message."""
    items = sorted(str(v) for v in values)
    if len(items) > 12:
        items = items[:12] + [f"... ({len(items) - 12} more)"]
    return ", ".join(items)


class RunInterrupted(Exception):
    """A run stopped by Ctrl-C after saving what it needs to resume; the command line exits with status 130."""

    exit_code = 130
    out: str | None = None  # the run folder to pass to --out when resuming
