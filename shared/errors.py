"""One error hierarchy for every command-line entry point.

Library code raises a ``ReproError`` subclass with a message that names the offending file/key and the fix;
``run_cli`` turns it into one line on stderr and exit status 2. ``--debug`` shows the full traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class ReproError(Exception):
    """Base class for errors a user can fix (bad config, bad data, diverged training)."""


class ConfigError(ReproError):
    """An unknown key, a wrong type or an impossible value in a config file or override."""


class DataError(ReproError):
    """A missing, truncated, corrupt or inconsistent data file."""


class TrainingError(ReproError):
    """Training cannot continue (a non-finite loss, no checkpoint to resume from)."""


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a ``ReproError`` becomes one line on stderr and exit status 2.

    ``--debug`` anywhere in argv re-raises, so the traceback is shown.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        main(args)
    except ReproError as exc:
        if debug:
            raise
        # One line even when a message carries a newline (e.g. text quoted from a parser).
        message = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
