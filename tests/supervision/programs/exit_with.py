"""Prints a line, then exits with a code: exit_with.py CODE [LINE] (LINE goes to stderr)."""

import sys

if len(sys.argv) > 2:
    print(sys.argv[2], file=sys.stderr, flush=True)
sys.exit(int(sys.argv[1]))
