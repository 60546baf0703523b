"""A warm evaluation process of the local launcher (launchers/local.py): it runs one `ablate exec eval KEY...`
after another in one Python process, so that the imports (vLLM, torch, transformers: ~13 s on a laptop) are paid once, and one vLLM engine
takes checkpoint after checkpoint of a model by loading each one's weights into it (framework.engines.vllm_engine).

Each request is the argument list of an `ablate exec` command, run exactly as the command would run it
(`framework.cli.main`, which opens the spec and store afresh, so every job is checked and built as it would be in a
process of its own), with this process's stdout and stderr pointed at that job's log for the time it runs. Each job
is still an idempotent store job with its own key, marker and failure; a crash of this process fails only the job it
was running, whose outputs are never marked done, and the launcher starts a new worker for the next.

Protocol, one JSON object a line: requests on stdin, {"argv": [...], "log": path}; one reply a request on the file
descriptor given as the first argument, {"rc": exit status}. End of file on stdin: the worker exits; so it does after
a job that failed, whose engine may be left broken or holding requests (the launcher starts a new worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path


def run_logged(argv: list[str], log: Path) -> int:
    """`ablate` with `argv`, its output (and that of every thread and library meanwhile) appended to `log`."""
    # lazy: the CLI imports every command's modules; this module is only ever run as a program
    from framework.cli import main

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
        try:
            return main(argv)
        except SystemExit as e:  # as the interpreter would end on it: None is 0, a message is printed and is 1
            if e.code is None or isinstance(e.code, int):
                return e.code or 0
            print(e.code, file=sys.stderr)
            return 1
        except Exception:  # main() turns every error into an exit status; this is a bug of ours, in the job's log
            traceback.print_exc()
            return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def serve(results_fd: int) -> None:
    """Requests come on stdin, which is then pointed at /dev/null: no job reads its input from the launcher's pipe."""
    requests = os.fdopen(os.dup(0), "r")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        rc = run_logged(list(request["argv"]), Path(request["log"]))
        os.write(results_fd, (json.dumps({"rc": rc}) + "\n").encode())
        if rc:  # a failed job may leave a broken engine or requests in it behind: the next job gets a new process
            return


if __name__ == "__main__":
    serve(int(sys.argv[1]))
