"""The one exception type every module raises for a user-facing failure.

Rules: the message is one line, without the "prog: error:" prefix (cli adds it);
the status is one of the sysexits below, which every man page documents.
"""

OK = 0
NO = 1            # "no" from a predicate verb, or a partial failure the message names
USAGE = 64        # the command line does not parse
DATAERR = 65      # an argument parses but its value is bad
NOINPUT = 66      # an input file named on the command line cannot be read
UNAVAILABLE = 69  # tmux/git missing, target does not exist where required
SOFTWARE = 70     # a bug
CANTCREAT = 73    # cannot create the state directory or a file in it
IOERR = 74        # I/O error on the state directory or database
TEMPFAIL = 75     # retrying later can succeed (lock held, database busy)
NOPERM = 77       # the state directory (or a file in it) is not safely ours


class OrchError(Exception):
    """A failure to report to the user as one line, with an exit status."""

    def __init__(self, message, status=DATAERR):
        super().__init__(message)
        self.status = status
