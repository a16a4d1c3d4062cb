"""Command lines that start a new Python process on this process's own copy of harness.

`python -m` and `-c` put the working directory first on sys.path, so a child started from a
folder that holds another copy of harness (an older checkout) would run that copy's code against
its parent's messages. These commands run this file instead, which takes its own folder off
sys.path and puts this copy's root first when it is not there already (a checkout run in place);
an installed copy is found as it was here.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # run as a script: its folder (harness/) is first on sys.path,
    del sys.path[0]  # where a module named like one of the standard library's would be found

from pathlib import Path

_SCRIPT = str(Path(__file__).resolve())
_ROOT = str(Path(__file__).resolve().parents[1])


def python_command(target: str, *args: str) -> list[str]:
    """The command line that runs `target` with `args` in a new interpreter: a module, run as
    `python -m` would (`harness.driver.shards`), or `module:function`, whose return value is the
    exit status (`harness.scale.ladder:rung_main`)."""
    return [sys.executable, _SCRIPT, target, *args]


def _main() -> None:
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    target = sys.argv.pop(1)
    module, _, function = target.partition(":")
    if function:
        import importlib

        sys.exit(getattr(importlib.import_module(module), function)())
    import runpy

    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main()
