"""The one redaction choke point: everything bound for MLflow (params, tags, artifacts, the report attached to the
sweep's run), the report files under results/<name>/ and the store's human-readable records and logs passes
through here.

Two rules, applied everywhere:
- by name: a value under a key or assignment whose name says secret (`*_KEY`, `*_TOKEN`, `*_SECRET`,
  `*PASSWORD*`, `DB_PASS`, `Authorization`, `X-Api-Key`, a `--api-key` flag, a `?token=` query parameter) is
  redacted whatever it looks like: in mappings, and in free text as `NAME=value`, `NAME: value` (with the YAML
  block under it), `"name": "value"` or `{...}`, `["NAME"] = value`, `export NAME=value`, `--name value`,
  `curl -u user:password` and HTTP headers;
- by shape: strings shaped like known credentials (hf_..., sk-proj-..., ghp_..., AKIA..., JWTs, private key
  blocks, cut ones included) and the password of a URL, wherever they appear.

Names are judged word by word, so that science data survives: `max_tokens`, `n_tokens`, `tokenizer`,
`eos_token`, `pass_rate`, `public_key`, the store's `cell_key`/`train_key` hashes and a trace that says "the key
to this problem is 5" are not secrets. A name whose last word does not say secret but an earlier one does
(`oauth_traces`) keeps its numbers: they are counts of data so labelled, as are the values of the data-keyed maps
(`by_source`, `source_mix`, `topic_mix`). In prose, "Let token = 17." is maths. A trace's text is data: only
credential-shaped strings and secret assignments in it go, and only from the copies that leave (the store keeps
what training reads).

Writers (`write_text`, `write_json`, `write_yaml`, `write_csv`), `copy_redacted` and `log_artifacts` (the only
way files reach MLflow) redact on the way out; `redact_records` cleans a store build's record files before it is
published and `redact_log` a stage's log when its task ends (`python -m framework.redaction LOG` in a Slurm job).
A Slurm job script is the one file that keeps secrets (the setup lines it runs): `lines_with_secrets` lets the plan
say so. Environment variables are recorded from an explicit list of names, their values still redacted.

Every pass is linear in the text (benchmarks/redaction.py): names are looked for only where a secret hint occurs,
lines are found by bisection, private key blocks by one scan for their END lines.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

__all__ = [
    "ENV_NAMES",
    "REDACTED",
    "copy_redacted",
    "environment_snapshot",
    "lines_with_secrets",
    "log_artifacts",
    "redact",
    "redact_log",
    "redact_records",
    "redact_text",
    "secret_name",
    "write_csv",
    "write_json",
    "write_text",
    "write_yaml",
]

REDACTED = "[REDACTED]"
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- secret names
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A word that contains one of these says secret wherever it stands (PGPASSWORD, db_passwd, client_secret).
_SECRET_INSIDE = re.compile(r"passw(?:or)?d|passphrase|secret")
_SECRET_WORDS = _words("credential credentials authorization apikey apikeys auth oauth cookie cookies")
# "pass", "pwd", "pw" say password as the last word after a prefix (DB_PASS, MYSQL_PWD), never alone (a pass of
# a loop, the shell's PWD) nor first (pass_rate, pass_at_k).
_PASS_WORDS = _words("pass pwd pw")
# "token" and "key" name a secret as the last word of a name (HF_TOKEN, hub_token, WANDB_API_KEY, X-Api-Key),
# unless the word before says otherwise: a tokenizer's special token, a count of tokens, the store's content
# keys (cell_key, train_key), a sort key, a public key. Alone, "token" is a secret and "key" is the store's hash.
_NOT_SECRET_TOKEN_BEFORE = _words(
    "eos bos pad unk sep cls mask special start end stop eot begin think im image video audio additional default "
    "first last next prev max min num n per total"
)
_NOT_SECRET_KEY_BEFORE = _words(
    "cell data train eval log results result pool model store job stage spec run arm search sort group cache "
    "dedup content join partition primary foreign lookup hash index column row problem answer metric config seed "
    "shuffle random rng dict map public pub verify verification"
)
# Plurals are counts or lists of the framework's own (tokens, eval_keys) except after these (api_keys, HF_TOKENS).
_PLURAL_SECRET_BEFORE = _words(
    "api hf access auth oauth bearer refresh session secret private client hub github openai wandb"
)
# A last word that makes the name a reference to a secret, or a description of one, rather than the secret.
_REFERENCE_WORDS = _words(
    "id ids type types kind name names path paths file files dir env var count len length limit budget size "
    "reference field column url uri endpoint method mode scheme provider enabled required format version hint"
)
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# Query parameters that carry credentials by convention even under a plain name (?key=, SAS ?sig=).
_QUERY_SECRET = _words("key sig signature x-amz-signature x-amz-credential x-amz-security-token")
# How surely a name says secret. STRONG: its last word does (HF_TOKEN, db_password): the value goes whatever it
# is. WEAK: only an earlier word does (oauth_traces, password_reset): a number or boolean under it is data (a
# count of a source or topic so named) and stays; text goes.
_STRONG, _WEAK = 2, 1


def _secret_word(word: str) -> bool:
    return word in _SECRET_WORDS or _SECRET_INSIDE.search(word) is not None


@functools.lru_cache(maxsize=8192)
def _segment_strength(name: str) -> int:
    words = [w.lower() for w in _WORD.findall(name)]
    if not words or words[-1] in _REFERENCE_WORDS:
        return 0
    last, before = words[-1], words[:-1]
    prev = before[-1] if before else ""
    if (
        _secret_word(last)
        or (last == "token" and prev not in _NOT_SECRET_TOKEN_BEFORE)
        or (last == "key" and prev and prev not in _NOT_SECRET_KEY_BEFORE)
        or (last in ("tokens", "keys") and prev in _PLURAL_SECRET_BEFORE)
        or (last in _PASS_WORDS and prev)
    ):
        return _STRONG
    return _WEAK if any(_secret_word(w) for w in before) else 0


def _strength(name: str) -> int:
    return max((_segment_strength(seg) for seg in re.split(r"[./\s]+", str(name)) if seg), default=0)


def secret_name(name: str) -> bool:
    """Whether a key, variable, flag or header name says that its value is a secret (any dotted segment)."""
    return _strength(name) > 0


# ------------------------------------------------------------------------------------------- free text
# Strings shaped like credentials, wherever they appear. `sk-` alone is a common word and path prefix
# (sk-llama-finetune-v2): only OpenAI's one-piece keys (48 alphanumerics) and the prefixed kinds are keys.
_SECRET_VALUE = re.compile(
    r"(?<!\w)(?:"  # one look-behind before the literal prefixes, not a \b in each branch: 10x faster
    r"hf_[A-Za-z0-9]{20,}"
    r"|sk-(?:proj|svcacct|admin|ant-(?:api|admin|sid)\d*|or-v\d+)-[A-Za-z0-9_-]{20,}"
    r"|sk-[A-Za-z0-9]{32,}(?![\w-])"
    r"|[sr]k_live_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|ya29\.[0-9A-Za-z_-]{20,}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_-]{40,}"
    r"|dapi[0-9a-f]{32}\b"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    r"|(?P<scheme>Bearer )[A-Za-z0-9._~+/-]{8,}=*"
    r")"
)
# Private key blocks (PEM, OpenSSH, PGP's "PRIVATE KEY BLOCK"), up to their END line when it comes within
# _PEM_MAX characters, else their armor headers and base64 lines (real or JSON-escaped newlines): a truncated
# key is still a key. (No possessive quantifier in _PEM_BODY: Python 3.11's early releases match them wrongly;
# each repetition starts at a line break, so plain backtracking stays linear.)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,20}-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY[A-Z ]{0,20}-----")
_PEM_BODY = re.compile(
    r"(?:[ \t]*(?:\r?\n|\\n)(?:[A-Za-z][\w-]*: [^\r\n\\]*|[A-Za-z0-9+/=]*)[ \t]*(?=\r?\n|\\n|\Z|\"))*"
)
_PEM_MAX = 65536
# scheme:// followed by what may be user:password@host; the rest is judged in _url_spans.
_URL_START = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://")
_URL_END = re.compile(r"[\s\"'<>`]")
_URL_MAX = 2048
_AFTER_HOST = r"(?=[/?#),;\]]|\Z)"
_URL_PORT = re.compile(r"\d{1,5}" + _AFTER_HOST)
_URL_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?" + _AFTER_HOST)
# NAME= / NAME: / "name": / 'name' = / ["NAME"] = , the value left to _value_span (so that "Note: password: x"
# sees both). They are tried only where a name holds a hint of a secret (_HINT): a trace's thousands of "x = 5"
# and "Step 1:" cost nothing.
_HINTS = "pass|pw|secret|token|key|auth|credential|cookie"
_HINT = re.compile(_HINTS)  # on the lower-cased text
_HINT_ANY_CASE = re.compile(_HINTS, re.IGNORECASE)  # where lower-casing changes the length (a few Unicode letters)
_NAME_HINT = rf"(?=[\w.-]*?(?i:{_HINTS}))"
_ASSIGNMENT = re.compile(
    r"(?<![\w.$-])(?P<q>[\"']?)" + _NAME_HINT + r"(?P<name>[A-Za-z_][\w.-]*)(?P=q)(?:(?<=[\"'])[ \t]*\])?"
    r"(?P<sep>[ \t]*(?:=>|:=|=(?!=)|:(?![:/]))[ \t]*)"
)
# setdefault("HF_TOKEN", "value"), getenv("API_KEY", "fallback"): a literal second argument.
_CALL = re.compile(r"\([ \t]*(?P<q>[\"'])" + _NAME_HINT + r"(?P<name>[A-Za-z_][\w.-]*)(?P=q)[ \t]*,[ \t]*(?=[\"'])")
_FLAG = re.compile(r"(?<![\w-])--?" + _NAME_HINT + r"(?P<name>[A-Za-z][\w-]*)(?P<sep>=|[ \t]+)(?=[^\s-])")
# curl -u user:password, --user=user:password (a uid:gid pair of digits is not a password)
_USER_FLAG = re.compile(r"(?<![\w-])(?:-u|--user)(?:=|[ \t]+)[\"']?(?P<user>[^\s:\"']*):(?P<pw>[^\s\"']+)")
_QUERY = re.compile(r"(?<=[?&;])(?P<name>[\w.-]+)=(?P<value>[^&#\s\"'<>]+)")
# What may stand before a name at the start of a line: indentation, a YAML list dash, a shell's export.
_LINE_PREFIX = re.compile(r"[ \t]*(?:-[ \t]+)?(?:(?:export|set|setenv|declare(?:[ \t]+-x)?)[ \t]+)?")
_AUTH_SCHEME = re.compile(r"(?i)(?:Bearer|Basic|Token|Digest|Bot|Negotiate|ApiKey)[ \t]+(?=[^\s,;\"'<>])")
# A reference to a value (a variable, a command's output) is not the value.
_NOT_A_VALUE = re.compile(r"(?:\$\{?\w+\}?|\$\(.*|`.*|%\w+%|null|None|~|true|false|\[REDACTED\])", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(?P<digits>\d+)(?:\.\d+)?\.?")
_QUOTED = {q: re.compile(rf"{q}(?P<body>(?:[^{q}\\\n]|\\.)*){q}?") for q in "\"'"}
_NON_SPACE = re.compile(r"\S*")
_RUN = re.compile(r"[^ \t\r\n,;&}\])\"'<>]*")
_INDENT = re.compile(r"[ \t\r]*")
_YAML_BLOCK = re.compile(r"[|>][-+0-9]*[ \t]*(?:#.*)?")
_BRACKETS = re.compile(r"[][{}\"']")
_BRACKET_MAX = 65536


class _Lines:
    """Line bounds of a text from one list of its newlines: a long single line costs no rescan per match."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def start(self, pos: int) -> int:
        i = bisect.bisect_left(self.newlines, pos)
        return self.newlines[i - 1] + 1 if i else 0

    def end(self, pos: int) -> int:
        i = bisect.bisect_left(self.newlines, pos)
        return self.newlines[i] if i < len(self.newlines) else len(self.text)


def _balanced_end(text: str, start: int) -> int:
    """End of the bracketed value opening at `start` (strings skipped); unclosed within _BRACKET_MAX
    characters, the whole rest up to that bound goes."""
    depth, i, limit = 0, start, min(len(text), start + _BRACKET_MAX)
    while (m := _BRACKETS.search(text, i, limit)) is not None:
        c = m.group()
        if c in "\"'":
            q = _QUOTED[c].match(text, m.start(), limit)
            i = q.end() if q else m.end()
            continue
        depth += 1 if c in "[{" else -1
        i = m.end()
        if depth == 0:
            return i
    return limit


def _block_span(lines: _Lines, eol: int, column: int) -> tuple[int, int] | None:
    """A YAML value on the lines after `key:` (a block scalar, a nested mapping or list): the lines indented
    deeper than the key's column, blank lines among them."""
    text, first, last, pos = lines.text, -1, -1, eol + 1
    while pos < len(text):
        end = lines.end(pos)
        content = _INDENT.match(text, pos, end).end()
        if content < end:  # not a blank line
            if content - pos <= column:
                break
            first = content if first < 0 else first
            last = content + len(text[content:end].rstrip())
        pos = end + 1
    return (first, last) if first >= 0 else None


def _value_span(
    lines: _Lines, m: re.Match[str], start: int, line_start: bool, strength: int
) -> tuple[int, int, str] | None:
    """Where the value of an assignment whose separator ends at `start` lies, and what replaces it; None when
    there is nothing to redact."""
    text, sep, quoted_name = lines.text, m.groupdict().get("sep") or "", bool(m.groupdict().get("q"))
    eol = lines.end(start)
    if line_start and ":" in sep and (start >= eol or _YAML_BLOCK.fullmatch(text, start, eol)):
        block = _block_span(lines, eol, m.start("name") - lines.start(m.start()))
        return (*block, REDACTED) if block else None
    if start >= eol:
        return None
    first = text[start]
    if first in "\"'":
        q = _QUOTED[first].match(text, start, eol)
        return (start + 1, start + 1 + len(q["body"]), REDACTED) if q and q["body"].strip() else None
    if first in "[{":  # a structure: it goes whole, across lines, brackets and all
        return start, _balanced_end(text, start), f'"{REDACTED}"' if quoted_name else REDACTED
    begin = start
    if scheme := _AUTH_SCHEME.match(text, start, eol):
        begin = scheme.end()  # keep "Bearer", redact what follows
    if line_start and ":" in sep:  # YAML or an HTTP header: the rest of the line
        end = begin + len(text[begin:eol].rstrip())
    elif line_start:  # a shell assignment: up to whitespace
        end = _NON_SPACE.match(text, begin, eol).end()
    else:
        end = _RUN.match(text, begin, eol).end()
    value = text[begin:end]
    if not value.strip() or _NOT_A_VALUE.fullmatch(value.strip()):
        return None
    if (number := _NUMBER.fullmatch(value)) is not None and (
        strength == _WEAK  # a count under a name that merely mentions a secret (oauth_traces: 10)
        or (not line_start and sep.strip() != sep and len(number["digits"]) <= 6)  # prose: "Let token = 17."
    ):
        return None
    return begin, end, REDACTED


def _name_starts(text: str) -> Iterator[int]:
    """Where each name holding a secret hint begins (its run of name characters, dashes and dots included), once
    per name, in order; a run is walked back once however many hints it holds."""
    low = text.lower()
    hints = _HINT.finditer(low) if len(low) == len(text) else _HINT_ANY_CASE.finditer(text)
    last_hint, last_start = -1, -1
    for h in hints:
        j = h.start()
        while j > last_hint and j and (text[j - 1].isalnum() or text[j - 1] in "_.-"):
            j -= 1
        start = last_start if j == last_hint else j  # the same run as the previous hint
        last_hint = h.start()
        if start != last_start:
            last_start = start
            yield start


def _assignment_spans(text: str, lines: _Lines) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    covered = 0
    for start in _name_starts(text):
        quote = start and text[start - 1] in "\"'"
        for m in (_ASSIGNMENT.match(text, start - 1) if quote else None, _ASSIGNMENT.match(text, start)):
            if m is None or m.start() < covered or not (strength := _strength(m["name"])):
                continue
            begin = lines.start(m.start())  # (a prefix longer than any indentation is not one)
            line_start = m.start() - begin <= 256 and _LINE_PREFIX.fullmatch(text, begin, m.start()) is not None
            if span := _value_span(lines, m, m.end(), line_start, strength):
                spans.append(span)
                covered = span[1]
                break
        paren = start - 2 if quote else -1
        while paren >= 0 and text[paren] in " \t":
            paren -= 1
        call = _CALL.match(text, paren) if paren >= 0 and text[paren] == "(" else None
        flag = _FLAG.match(text, start) if text[start] == "-" else None
        for m in (call, flag):
            if m and (strength := _strength(m["name"])) and (span := _value_span(lines, m, m.end(), False, strength)):
                spans.append(span)
    if "-u" in text or "--user" in text:
        for m in _USER_FLAG.finditer(text):
            if not (m["user"].isdigit() and m["pw"].isdigit()) and not _NOT_A_VALUE.fullmatch(m["pw"]):
                spans.append((m.start("pw"), m.end("pw"), REDACTED))
    if "=" in text:
        for m in _QUERY.finditer(text):
            if secret_name(m["name"]) or m["name"].lower() in _QUERY_SECRET:
                spans.append((m.start("value"), m.end("value"), REDACTED))
    return spans


def _url_spans(text: str) -> list[tuple[int, int, str]]:
    """The password of scheme://user:password@host. The user may hold an "@" (me@corp.com, as MLflow's basic
    auth often has) and the password an "@" or "/": it runs to the first "@" that a host name follows."""
    spans = []
    for m in _URL_START.finditer(text):
        a = m.end()
        stop = _URL_END.search(text, a, a + _URL_MAX)
        end = stop.start() if stop else min(len(text), a + _URL_MAX)
        colon = text.find(":", a, end)
        if colon < 0 or any(c in text[a:colon] for c in "/?#") or _URL_PORT.match(text, colon + 1, end):
            continue
        at = text.find("@", colon + 1, end)
        while at >= 0 and not _URL_HOST.match(text, at + 1, end):
            at = text.find("@", at + 1, end)
        if at > colon + 1:
            spans.append((colon + 1, at, REDACTED))
    return spans


def _private_key_spans(text: str) -> list[tuple[int, int, str]]:
    """Each private key block, in one pass over the text: END lines are found once and looked up by bisection,
    so a thousand BEGIN lines without an END cost no rescan each."""
    if "PRIVATE KEY" not in text:
        return []
    ends = [(m.start(), m.end()) for m in _PEM_END.finditer(text)]
    spans, pos = [], 0
    while (m := _PEM_BEGIN.search(text, pos)) is not None:
        i = bisect.bisect_left(ends, (m.end(), -1))
        if i < len(ends) and ends[i][0] - m.end() <= _PEM_MAX:
            end = ends[i][1]
        else:
            end = _PEM_BODY.match(text, m.end(), m.end() + _PEM_MAX).end()
        spans.append((m.start(), end, REDACTED))
        pos = end
    return spans


def _replace(text: str, spans: list[tuple[int, int, str]]) -> str:
    if not spans:
        return text
    out, pos = [], 0
    for begin, end, new in sorted(spans):
        begin = max(begin, pos)  # overlaps the previous one
        if end <= begin:
            continue
        out += [text[pos:begin], new]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Free text with secrets replaced by REDACTED: credential-shaped strings, private keys, URL passwords and the
    values of secret-named assignments, flags, headers and query parameters."""
    if not text:
        return text
    text = _replace(text, _private_key_spans(text) + (_url_spans(text) if "://" in text else []))
    text = _SECRET_VALUE.sub(lambda m: (m["scheme"] or "") + REDACTED, text)
    return _replace(text, _assignment_spans(text, _Lines(text)))


# Maps whose keys are data (source labels, topic names), their values counts: a source named "oauth_traces" or
# a topic named "secrets" is not a secret-named field.
DATA_KEYED = frozenset({"by_source", "source_mix", "topic_mix", "by_topic", "by_level"})


def redact(obj: Any, key: str = "", *, _data_key: bool = False) -> Any:
    """A copy of a JSON-like value with secrets replaced: every value under a secret-naming key (a number or
    boolean only where the name is unambiguous), and every secret in its strings."""
    strength = _strength(key) if key and not _data_key and obj not in (None, "", [], {}, REDACTED) else 0
    if strength == _STRONG or (strength == _WEAK and not isinstance(obj, int | float)):
        return REDACTED
    if isinstance(obj, Mapping):
        data = str(key) in DATA_KEYED
        return {k: redact(v, str(k), _data_key=data) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


# ------------------------------------------------------------------------------------------- writers
def _write_atomic(path: Path, text: str) -> Path:
    """Readers see the old file or the new one, never a prefix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return _write_atomic(path, redact_text(text))


def write_json(path: Path, obj: Any) -> Path:
    return _write_atomic(path, json.dumps(redact(obj), indent=2, default=str) + "\n")


def write_yaml(path: Path, obj: Any) -> Path:
    import yaml

    return _write_atomic(path, yaml.safe_dump(redact(obj), sort_keys=False, allow_unicode=True))


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """A table with its text cells (and column names) redacted; numbers untouched."""
    import pandas as pd

    out = frame.rename(columns=lambda c: redact_text(c) if isinstance(c, str) else c)
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(lambda v: redact_text(v) if isinstance(v, str) else v)
    return _write_atomic(path, out.to_csv(index=False))


# ------------------------------------------------------------------------------------------- files
# Binary files that carry no text of ours: copied as they are. Any other file that is not UTF-8 text is refused,
# so that a new kind of artifact cannot leave without a redactor.
_BINARY_AS_IS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".pdf"})


_PARQUET_BATCH = 1024


def _redact_parquet(src: Path, dst: Path) -> None:
    """Every string column redacted, batch by batch: an eval of a 32B model can hold GBs of text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(src)
    with pq.ParquetWriter(dst, source.schema_arrow) as writer:
        for batch in source.iter_batches(batch_size=_PARQUET_BATCH):  # the default, 65,536 rows, is a whole eval
            table = pa.Table.from_batches([batch], schema=source.schema_arrow)
            for i, field in enumerate(table.schema):
                if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
                    values = [redact_text(v) if v is not None else None for v in table.column(i).to_pylist()]
                    table = table.set_column(i, field, pa.array(values, type=field.type))
            writer.write_table(table)


def _redact_jsonl(src: Path, dst: Path) -> None:
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            try:
                fout.write(json.dumps(redact(json.loads(line)), ensure_ascii=False) + "\n")
            except (ValueError, RecursionError):  # not JSON (or a blank line, or nested too deep): as text
                fout.write(redact_text(line))


def copy_redacted(src: Path, dst: Path) -> Path:
    """Copy a file with its secrets redacted, by its kind: JSON and YAML by structure (names and values), JSONL
    line by line, Parquet column by column, other text as free text, images as they are."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    suffix = src.suffix.lower()
    if suffix == ".parquet":
        _redact_parquet(src, dst)
    elif suffix == ".jsonl":
        _redact_jsonl(src, dst)
    elif suffix in _BINARY_AS_IS:
        shutil.copyfile(src, dst)
    else:
        try:
            text = src.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{src}: not text and not a known binary kind; add a redactor for {suffix!r}") from e
        dst.write_text(_redact_document(text, suffix), encoding="utf-8")
    return dst


def _redact_document(text: str, suffix: str) -> str:
    """JSON and YAML by structure, anything else (or a document that does not parse) as free text."""
    if suffix == ".json":
        with contextlib.suppress(ValueError, RecursionError):
            return json.dumps(redact(json.loads(text)), indent=2, ensure_ascii=False) + "\n"
    if suffix in (".yaml", ".yml"):
        import yaml

        with contextlib.suppress(yaml.YAMLError, RecursionError):
            data = yaml.safe_load(text)
            if isinstance(data, dict | list):
                return redact_text(yaml.safe_dump(redact(data), sort_keys=False, allow_unicode=True))
    return redact_text(text)


def log_artifacts(
    client: MlflowClient, run_id: str, files: Mapping[str, Path], artifact_path: str | None = None
) -> None:
    """The only way files reach MLflow: each (artifact path -> local file) is copied redacted into a fresh
    directory, which is uploaded whole."""
    with tempfile.TemporaryDirectory(prefix="ablate-upload-") as tmp:
        for name, src in files.items():
            copy_redacted(Path(src), Path(tmp) / name)
        client.log_artifacts(run_id, tmp, artifact_path)


# A store build's human-readable records: its top-level files of these names or suffixes. Model directories
# (config.json, tokenizer files) and the data the stages read (train.jsonl, Parquet) are not touched.
RECORD_NAMES = frozenset({"manifest.json", "stats.json", "metrics.json", "run.json", "train_args.json"})
RECORD_SUFFIXES = frozenset({".log", ".md"})


def redact_records(build_dir: Path) -> list[Path]:
    """Redact, in place, the record files at the top of a build directory; returns those that changed.

    It runs as a finished build is published, after a training has deleted its checkpoints: it never raises. A
    record it cannot redact (unreadable, nested too deep to parse and to scan) is replaced by a note saying it
    was withheld, or removed, rather than published as it is or failing the build."""
    try:
        paths = sorted(Path(build_dir).iterdir())
    except OSError as e:
        log.warning("could not list %s to redact its records: %s", build_dir, e)
        return []
    changed = []
    for path in paths:
        try:
            if not path.is_file() or (path.name not in RECORD_NAMES and path.suffix not in RECORD_SUFFIXES):
                continue
            text = path.read_bytes().decode("utf-8", errors="surrogateescape")
            clean = _redact_document(text, path.suffix)
            if clean != text and (path.suffix != ".json" or _json_changed(text, clean)):
                _write_atomic(path, clean)
                changed.append(path)
        except Exception as e:
            _withhold(path, e)
            changed.append(path)
    return changed


def _withhold(path: Path, error: BaseException) -> None:
    note = f"withheld: this record could not be redacted ({type(error).__name__})"
    log.warning("%s: %s; %s", path, error, note)
    try:
        _write_atomic(path, json.dumps({"withheld": note}) + "\n" if path.suffix == ".json" else note + "\n")
    except Exception:
        with contextlib.suppress(OSError):
            path.unlink()


def _json_changed(before: str, after: str) -> bool:
    """Only a change of content, not of layout, is worth a rewrite."""
    try:
        return json.loads(before) != json.loads(after)
    except (ValueError, RecursionError):
        return True


def redact_log(path: Path) -> bool:
    """Redact a stage's log in place when its task ends; True if it changed. Rewritten in place, not replaced:
    a scheduler appending to it (Slurm's --open-mode=append) keeps writing to the same file. Bytes that are not
    UTF-8 are kept as they were. Never raises: a log that cannot be redacted must not fail the task."""
    try:
        with open(path, "r+b") as f:
            raw = f.read()
            text = raw.decode("utf-8", errors="surrogateescape")
            clean = redact_text(text)
            if clean == text:
                return False
            f.seek(len(raw))  # lines a straggling writer appended while we redacted are kept, redacted too
            late = f.read().decode("utf-8", errors="surrogateescape")
            f.seek(0)
            f.write((clean + redact_text(late)).encode("utf-8", errors="surrogateescape"))
            f.truncate()
        return True
    except FileNotFoundError:
        return False
    except Exception as e:
        log.warning("could not redact the log %s: %s", path, e)
        return False


def lines_with_secrets(lines: list[str]) -> list[tuple[int, str]]:
    """(index, the line redacted) of each line that holds a secret, as `export HF_TOKEN=hf_...` in
    launcher.slurm.setup: a job script must hold such a line to run, so the store's copy of the script keeps it.
    `export HF_TOKEN=$(cat ~/.hf_token)` and `export HF_TOKEN=$HF_TOKEN` hold none."""
    return [(i, clean) for i, line in enumerate(lines) if (clean := redact_text(line)) != line]


# ------------------------------------------------------------------------------------------- environment
# Environment variables recorded with a run (how it ran), by name: nothing else in the environment is read.
# Secret ones among them are recorded as set, never by value.
ENV_NAMES = (
    "ABLATE_CACHE_DIR",
    "ABLATE_RESULTS_DIR",
    "CUDA_DEVICE_ORDER",
    "CUDA_VISIBLE_DEVICES",
    "DS_ACCELERATOR",
    "DS_BUILD_OPS",
    "HF_DATASETS_CACHE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
    "MKL_NUM_THREADS",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_URI",
    "NCCL_DEBUG",
    "NCCL_IB_DISABLE",
    "NCCL_P2P_DISABLE",
    "NCCL_SOCKET_IFNAME",
    "OMP_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_ID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_NUM_NODES",
    "SLURM_JOB_PARTITION",
    "SLURM_NODELIST",
    "TOKENIZERS_PARALLELISM",
    "TORCH_CUDA_ARCH_LIST",
    "TORCH_EXTENSIONS_DIR",
    "TRANSFORMERS_CACHE",
    "TRANSFORMERS_OFFLINE",
    "VLLM_ATTENTION_BACKEND",
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_USE_V1",
    "VLLM_WORKER_MULTIPROC_METHOD",
    "XDG_CACHE_HOME",
)
_PACKAGES = ("torch", "transformers", "deepspeed", "vllm", "vllm-cpu", "accelerate", "datasets", "mlflow", "numpy")


def environment_snapshot() -> dict[str, Any]:
    """How this process ran: interpreter, host, key package versions and the environment variables of
    ENV_NAMES that are set, redacted."""
    versions = {}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    env = {k: os.environ[k] for k in sorted(ENV_NAMES) if k in os.environ}
    return redact(
        {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "host": socket.gethostname(),
            "packages": versions,
            "env": env,
        }
    )


if __name__ == "__main__":  # python -m framework.redaction LOG...: a Slurm job redacts its own log as it ends
    for arg in sys.argv[1:]:
        redact_log(Path(arg))
