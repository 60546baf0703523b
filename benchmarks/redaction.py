"""Cost of the redaction choke point: `redact_text` on 1 MB of toy traces (what every cell's `data/train.jsonl`
upload pays), and on inputs that once took quadratic time, beside the plain two-regex pass redaction used to be.

    .venv/bin/python benchmarks/redaction.py [--mb 1] [--repeats 3]

"baseline" is that older pass (key shapes and URL passwords only, no names, no private keys); its ratio is the
price of redacting by name. For the pathological inputs (BEGIN lines of private keys without an END; one line of
`password=x` assignments) each size is twice the one before: a time that doubles with it is linear, one that
quadruples is quadratic. Prints the median seconds of each.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable

from framework.redaction import redact_text
from framework.toy.core import make_world
from framework.toy.world import pool_rows

# The pass redaction was before it judged names: shapes of known keys and URL passwords, two substitutions.
_BASELINE_VALUE = re.compile(
    r"\bhf_[A-Za-z0-9]{20,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bdapi[0-9a-f]{32}\b"
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    r"|(?<=Bearer )[A-Za-z0-9._~+/-]{8,}=*"
)
_BASELINE_URL = re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@")


def baseline(text: str) -> str:
    return _BASELINE_VALUE.sub("[REDACTED]", _BASELINE_URL.sub(r"\1:[REDACTED]@", text))


def toy_traces(mb: float) -> str:
    """JSONL rows of the toy pool (as data/train.jsonl holds them), repeated to `mb` megabytes."""
    rows = [json.dumps(r) for r in pool_rows(make_world(0))]
    out, size = [], 0
    while size < mb * 1_000_000:
        for row in rows:
            out.append(row)
            size += len(row) + 1
    return "\n".join(out) + "\n"


def median_s(fn: Callable[[str], str], text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="size of the toy-trace input")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    traces = toy_traces(args.mb)
    now, before = median_s(redact_text, traces, args.repeats), median_s(baseline, traces, args.repeats)
    mb = len(traces) / 1e6
    print(f"toy traces, {mb:.2f} MB: redact_text {now:.3f} s  baseline {before:.3f} s  ratio {now / before:.2f}x")

    cases: dict[str, tuple[Callable[[int], str], tuple[int, ...]]] = {
        "private-key BEGIN lines, no END": (
            lambda n: "-----BEGIN RSA PRIVATE KEY-----\n" * n,
            (4_000, 8_000, 16_000, 32_000),
        ),
        "one line of password=x": (lambda n: "password=x " * n, (50_000, 100_000, 200_000, 400_000)),
    }
    for name, (make, sizes) in cases.items():
        print(f"{name}:")
        previous = None
        for n in sizes:
            text = make(n)
            t = median_s(redact_text, text, args.repeats)
            b = median_s(baseline, text, args.repeats)
            growth = f"  x{t / previous:.1f} for twice the input" if previous else ""
            print(f"  {len(text) / 1e6:6.2f} MB: redact_text {t:.3f} s  baseline {b:.3f} s  ratio {t / b:.1f}x{growth}")
            previous = t


if __name__ == "__main__":
    main()
