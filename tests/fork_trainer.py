"""Imports the trainer once, then forks one real training process per request (fault-injection tests).

A test writes one JSON line per run, ``[argv, log_file]``, and reads back the child's PID, then,
once the child has ended (for instance killed by the test with SIGKILL), its wait status. The
import is paid once instead of once per run, and every run is a real, separate process.
Nothing has computed with torch before a fork, so no thread pool is copied into a child.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from co_settle_hf.cli import run


def child(argv: list[str], log_file: str) -> None:
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    code = 0
    try:
        run("train", argv)  # as the command line runs it: a refusal exits with its message
    except SystemExit as refusal:
        print(refusal, flush=True)
        code = 2
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    for line in sys.stdin:
        argv, log_file = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(argv, log_file)
        print(pid, flush=True)
        print(os.waitpid(pid, 0)[1], flush=True)
