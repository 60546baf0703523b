"""DeepSpeed's just-in-time built ops, built once per environment and never left locked by a killed build.

DeepSpeed compiles some ops on first use: on CPU the shared-memory all-reduce (on every start of distributed
training), and its CPU Adam wherever the optimizer is offloaded. torch guards each build with a plain lock file
(`lock` in the op's build directory) that only the builder removes. A build killed half way (Ctrl-C, a timeout, a
preempted job) leaves that file behind, and every later training start then waits on it forever without a word.
And by default all Python environments of a user share one build directory, so two of them (a second clone, a
fresh virtualenv) rebuild the op over each other whenever they alternate: about a minute on two cores each time.

So each environment gets its own build directory, and a worker builds or loads the ops it needs holding an flock
that the kernel drops when its holder dies. Whoever holds it knows no build is running; a torch lock file that
does not go away within `SETTLE_S` (loading a built op holds it for milliseconds) is a dead build's, and goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from framework.file_lock import flocked

BATON = "lock"  # torch.utils.cpp_extension's build lock, a file in the op's build directory
SETTLE_S = 20.0
CPU_COMM_OP = "ShareMemCommBuilder"
CPU_ADAM_OP = "CPUAdamBuilder"


def extensions_dir(env: Mapping[str, str]) -> Path:
    """The user's TORCH_EXTENSIONS_DIR, or a directory of this Python environment's own under the user cache."""
    if env.get("TORCH_EXTENSIONS_DIR"):
        return Path(env["TORCH_EXTENSIONS_DIR"])
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    tag = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return cache / "ablate" / "torch_extensions" / f"py{sys.version_info[0]}{sys.version_info[1]}-{tag}"


def needed_ops(*, gpu: bool, offload_optimizer: bool) -> list[str]:
    """The DeepSpeed op builders a training run will load: the CPU all-reduce without a GPU, CPU Adam if offloaded."""
    return ([] if gpu else [CPU_COMM_OP]) + ([CPU_ADAM_OP] if offload_optimizer else [])


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the build directory's flock (released by the kernel however the holder ends)."""
    with flocked(directory / ".ablate-build.lock"):
        yield


def clear_stale_baton(op_dir: Path, settle_s: float = SETTLE_S) -> bool:
    """With the flock held: remove the op's torch build lock if it outlives `settle_s`. True when one was removed."""
    baton = op_dir / BATON
    deadline = time.monotonic() + settle_s
    while baton.exists():
        if time.monotonic() >= deadline:
            baton.unlink(missing_ok=True)
            # stderr, not logging: the workers' stderr is what reaches train.log
            print(f"[ablate] removed the lock of a killed build: {baton}", file=sys.stderr, flush=True)
            return True
        time.sleep(0.2)
    return False


def prepare(builders: Sequence[str], directory: Path) -> None:
    """Build or load each op under the flock, before DeepSpeed asks for it, so no worker waits on a dead build."""
    if not builders:
        return
    from deepspeed.accelerator import get_accelerator

    for name in builders:
        builder = get_accelerator().create_op_builder(name)
        if builder is None or not builder.is_compatible(verbose=False):
            continue  # DeepSpeed does without it, and so do we
        with exclusive(directory):
            clear_stale_baton(directory / builder.name)
            builder.load(verbose=False)
