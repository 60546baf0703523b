"""One search worker in a process of its own, for the concurrency tests: the real worker loop on a real sqlite
study under a real store mutex, with a cheap objective that appends each call to a file.

    python worker_process.py ARGS_JSON
ARGS_JSON: {"url", "store", "study", "search" (a search block), "worker", "sleep_s", "calls", "hang": bool}.
With "hang", the first trial this process runs never returns (the test kills it mid-trial)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from framework.search.study import open_storage, open_study, run_worker
from framework.spec.search import SearchSpec
from framework.store import Store


def main(args: dict[str, Any]) -> None:
    search = SearchSpec.model_validate(args["search"])
    store = Store(args["store"], heartbeat_s=1.0, stale_after_s=5.0)

    def mutex() -> Any:
        return store.mutex("search-" + args["study"], poll_s=0.02)

    study = open_study(open_storage(args["url"], search, mutex), args["study"], search, mutex, worker=args["worker"])

    def objective(trial: Any, params: dict[str, Any]) -> float:
        with open(args["calls"], "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "number": trial.number, "params": params}) + "\n")
        if args.get("hang"):
            time.sleep(3600)
        time.sleep(args["sleep_s"])
        return float(sum(v for v in params.values() if isinstance(v, int | float)))

    ran = run_worker(study, search, objective, mutex, poll_s=0.2)
    Path(args["calls"]).with_suffix(f".worker{args['worker']}.json").write_text(json.dumps(ran))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
