"""The one error type for a user's mistake (the CLI prints its message, no traceback), and the exit statuses."""

# Exit statuses of `loghi-ft`: 0 everything was done; 1 a user error (a message, no traceback) or a crash;
# 2 a usage error (argparse); 130 Ctrl+C. PARTIAL: the run finished all it could, but some pages or lines
# were skipped (each one listed, the summary line says how many); scripts/run-common.sh reads the number here.
PARTIAL = 3


class UserError(Exception):
    """Bad input, a missing file, an impossible option: something a person can fix."""
