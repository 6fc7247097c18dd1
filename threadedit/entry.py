"""The `threadedit` command's first module: it guards the moments before the program is loaded.

Loading the CLI imports the whole program (a few tenths of a second). A Ctrl-C or SIGTERM in that
window would otherwise print a KeyboardInterrupt traceback, or end with the signal's status, before
any of our own handling exists. Nothing has started yet, so a stop then simply ends the process:
0 for SIGTERM, as a stop of the running program does, and 130 for Ctrl-C, as shells expect.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _stop_while_loading(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0 if signum == signal.SIGTERM else 128 + signum)


def main() -> int:
    previous = {sig: signal.signal(sig, _stop_while_loading) for sig in (signal.SIGINT, signal.SIGTERM)}
    from threadedit.cli import main as cli_main

    for sig, handler in previous.items():
        signal.signal(sig, handler)
    try:
        return cli_main()
    except KeyboardInterrupt:  # Ctrl-C in a one-shot command: the store's transactions roll back
        print("threadedit: stopped.", file=sys.stderr)
        return 128 + signal.SIGINT
