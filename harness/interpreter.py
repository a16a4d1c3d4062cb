"""Commands that start a new Python process on this process's own copy of harness.

`python -m` and `-c` put the working directory first on sys.path, so a child started from a
folder that holds another copy of harness (an older checkout) would run that copy's code against
its parent's messages. These commands take that entry out and put this copy's root first when it
is not on sys.path already (a checkout run in place); an installed copy is found as it was here.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
_BOOT = (
    "import sys\n"
    "if sys.path[:1] == ['']: del sys.path[0]\n"
    "_root = sys.argv.pop(1)\n"
    "if _root not in sys.path: sys.path.insert(0, _root)\n"
)


def python_command(code: str, *args: str) -> list[str]:
    """`python -c code args...`, importing harness from this process's copy."""
    return [sys.executable, "-c", _BOOT + code, _ROOT, *args]


def module_command(module: str, *args: str) -> list[str]:
    """`python -m module args...`, importing harness from this process's copy."""
    run = f"import runpy\nrunpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    return python_command(run, *args)
