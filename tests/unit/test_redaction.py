"""The redaction choke point: a corpus of secret shapes (known key formats, assignments, shell exports, CLI flags,
URLs, query strings, HTTP headers, JSON, YAML) must vanish, and a list of science strings must survive untouched;
the writers, the file copier, the store's records, the environment snapshot and the upload all go through it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from framework.redaction import (
    REDACTED,
    copy_redacted,
    environment_snapshot,
    log_artifacts,
    redact,
    redact_records,
    redact_text,
    secret_name,
    write_csv,
    write_json,
    write_text,
    write_yaml,
)
from framework.store import Store
from tests.synthetic import migrated_db, synthetic_sweep

HEX40 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"  # a WANDB API key's shape (and a git commit's: only by name)
SK_PROJ = "sk-proj-" + "Ab3dE" * 8
HF = "hf_" + "QwErTy12" * 4

# (text, the secret inside it): after redaction the secret must be gone and REDACTED there instead.
SECRETS = [
    # known key formats, wherever they are
    (f"my key is {SK_PROJ} ok", SK_PROJ),
    (f"token {HF} in a sentence", HF),
    ("ghp_" + "a" * 36, "ghp_" + "a" * 36),
    ("github_pat_" + "B" * 30, "github_pat_" + "B" * 30),
    ("glpat-" + "c" * 20, "glpat-" + "c" * 20),
    ("xoxb-1234567890-abcdef", "xoxb-1234567890-abcdef"),
    ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
    ("google AIza" + "D" * 35, "AIza" + "D" * 35),
    (
        "jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4",
        "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4",
    ),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXk"),
    # assignments whose name says secret, whatever the value looks like
    (f"export WANDB_API_KEY={HEX40}", HEX40),
    ("export OPENAI_API_KEY=sk-test-123", "sk-test-123"),
    ("OPENAI_API_KEY=sk-test-123 python train.py", "sk-test-123"),
    ("  - export HF_TOKEN=abc123def", "abc123def"),
    ("DB_PASSWORD='hunter 2' ./run", "hunter 2"),
    ("MY_SERVICE_SECRET=plainword", "plainword"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG"),
    ("client_secret = 'shh-quiet'", "shh-quiet"),
    ("hub_token=1234", "1234"),
    # command-line flags
    ("vllm serve m --api-key sk-test-123 --port 8000", "sk-test-123"),
    ("huggingface-cli login --token=tok_98765", "tok_98765"),
    ("mysql --password hunter2 -u root", "hunter2"),
    # URLs with passwords and credentials in query strings
    ("https://bob:s3cret@mlflow.example.com/api", "s3cret"),
    ("postgresql://user:p@ss:w0rd@db:5432/mlflow", "p@ss:w0rd"),
    ("https://host/data.jsonl?token=abc123xyz&split=train", "abc123xyz"),
    ("https://bucket.blob/x.parquet?sv=2022&sig=Zm9vYmFy%3D", "Zm9vYmFy%3D"),
    ("https://maps.example.com/api?key=plain-key-42", "plain-key-42"),
    # HTTP headers
    ("Authorization: Bearer abcdefghijkl", "abcdefghijkl"),
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ('curl -H "Authorization: Token t0k3n" https://x', "t0k3n"),
    ("X-Api-Key: zz-top-9", "zz-top-9"),
    ("Cookie: session=abc; theme=dark", "session=abc"),
    # JSON and YAML
    ('{"token": "short1", "max_tokens": 32768}', "short1"),
    ('{"apiKey":"camel-case-1"}', "camel-case-1"),
    ("password: my pass phrase", "my pass phrase"),
    ("mlflow:\n  tracking_password: pw-in-yaml\n  uri: x", "pw-in-yaml"),
    ("Note: password: hunter3", "hunter3"),
    # names that say password, plural keys and tokens
    ("PGPASSWORD=pg-hunter2 psql", "pg-hunter2"),
    ("DB_PASS=db-hunter2", "db-hunter2"),
    ("MYSQL_PWD=my-hunter2 mysql", "my-hunter2"),
    ("SMTP_PASS: smtp-hunter2", "smtp-hunter2"),
    ("api_keys: [k-abc-1, k-abc-2]", "k-abc-1"),
    ("HF_TOKENS=tok-abc", "tok-abc"),
    ("ssh_passphrase = 'open sesame'", "open sesame"),
    ("x = 5, secret = 99999999", "99999999"),  # a long number under a secret name, even in prose
    # private keys: PGP blocks, and bodies cut before their END line
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBFpgpBody\n=ab12\n"
        "-----END PGP PRIVATE KEY BLOCK-----",
        "lQOYBFpgpBody",
    ),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAcut\nabc+/=\nThe answer is 5.", "MIIEowIBAAKCAQEAcut"),
    ('{"k": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANjsonCut\\nabc=", "n": 1}', "MIIEvQIBADANjsonCut"),
    # URLs whose user holds an "@" or whose password a "/", and curl's -u
    ("https://me@corp.com:hunter-at@mlflow.corp.com/api", "hunter-at"),
    ("https://alice:pa/ss@host/x", "pa/ss"),
    ("curl -u alice:curl-pw-1 https://x", "curl-pw-1"),
    ("curl --user=bob:curl-pw-2 https://x", "curl-pw-2"),
    # values that span more than a word: a scheme and its credential, YAML blocks, nested JSON, code
    ("authorization=Basic dXNlcjpwYXNzbasic", "dXNlcjpwYXNzbasic"),
    ("password: |\n  block-pw-1\n  block-pw-2\nnext: 1", "block-pw-1"),
    ("db:\n  password:\n    next-line-pw\n  host: h", "next-line-pw"),
    ('{\n "auth": {\n  "value": "nested-pw"\n },\n "n": 1\n}', "nested-pw"),
    ('os.environ["HF_TOKEN"] = "abc123plain"', "abc123plain"),
    ("os.environ.setdefault('HF_TOKEN', 'def456plain')", "def456plain"),
]

# Science data and the framework's own fields: must come out exactly as they went in.
SCIENCE = [
    "max_tokens: 32768",
    "sampling: {temperature: 0.6, top_p: 0.95, max_tokens: 32768}",
    "n_tokens=5120, max_new_tokens=4096, num_tokens: 7, tokens: 12",
    "tokenizer: Qwen/Qwen2.5-32B, tokenizer_config.json, tokenize=True",
    "eos_token: <|im_end|>\npad_token: <|endoftext|>",
    "The key to this problem is 5. So the key: 5 is the answer.",
    "Wait, the next token is 'x'. Let me check: 3 + 4 = 7. But wait, is the secret ingredient 2? No.",
    "Then x = 5 and y: 7, so \\boxed{12}.",
    "pass_rate: 0.25, pass@1=0.61, maj@64 = 0.7",
    "ablate.cell_key=3f2a9c1d0b8e7a6f, train_key: 0c1d2e3f4a5b6c7d, eval_keys: aime24:aa11",
    "mlflow.source.git.commit: " + HEX40,
    "https://mlflow.example.com:5000/#/experiments/1/runs/abc",
    "token_budget_reference: [length, any, {}]",
    "reflection_keywords: [wait, but wait, let me check]",
    "a plain sentence about tokens, sk-ills and hf_ prefixes",
    "--max-tokens 512 --tokenizer gpt2 --keep-checkpoint",
    "api_key_env: OPENAI_API_KEY",
    "--token $HF_TOKEN",
    "HF_TOKEN=${HF_TOKEN}",
    "the author: Gauss; authority=3",
    # names that only look like secrets
    "num_tokens: 4, total_tokens: 9, pad_token: <pad>, special_tokens: [<think>, </think>]",
    "pass_at_k: 3, passes: 2, sort_key=c, eval_keys: [aime24:aa11]",
    "public_key = (e, n) and ssh_public_key: ssh-ed25519 AAAAC3Nz",
    "PWD=/home/me OLDPWD=/tmp",
    # prose and paths
    "Let token = 17. Then password = 3 + 4, so the answer is 7.",
    "path=/data/models/sk-llama-finetune-v2-abcdef",
    "model_dir: /ckpt/sk-learn-baseline-run-12",
    "Let me check the key:\n\nThe answer is 5.",
    # references to a secret, not the secret
    "export HF_TOKEN=$(cat ~/.hf_token)",
    "export WANDB_API_KEY=`cat ~/.wandb`",
    # URLs and flags without credentials
    "docker run -u 1000:1000 img; python -u train.py --user alice",
    "https://host:8080/@user and https://medium.com/@user",
    "ssh://git@github.com:22/x and http://[::1]:5000/x",
]


@pytest.mark.parametrize(("text", "secret"), SECRETS, ids=[s for _, s in SECRETS])
def test_each_secret_shape_is_redacted(text: str, secret: str):
    out = redact_text(text)
    assert secret not in out and REDACTED in out


@pytest.mark.parametrize("text", SCIENCE)
def test_science_strings_are_kept(text: str):
    assert redact_text(text) == text


def test_the_name_and_the_surroundings_are_kept():
    assert redact_text(f"export WANDB_API_KEY={HEX40}") == f"export WANDB_API_KEY={REDACTED}"
    assert redact_text("Authorization: Bearer abcdefghijkl") == f"Authorization: Bearer {REDACTED}"
    assert redact_text("https://bob:s3cret@h/x") == f"https://bob:{REDACTED}@h/x"
    assert redact_text('{"token": "x1", "n": 2}') == f'{{"token": "{REDACTED}", "n": 2}}'
    assert redact_text("a=1 --api-key k9 --port 8000") == f"a=1 --api-key {REDACTED} --port 8000"


def test_the_shape_of_what_is_left_is_kept():
    nested = '{\n "auth": {\n  "value": "nested-pw"\n },\n "n": 1\n}'
    assert json.loads(redact_text(nested)) == {"auth": REDACTED, "n": 1}  # still JSON, the brace kept
    assert redact_text("password: |\n  a\n  b\nnext: 1") == f"password: |\n  {REDACTED}\nnext: 1"
    assert redact_text("authorization=Basic dXNlcjpw") == f"authorization=Basic {REDACTED}"
    assert (
        redact_text("-----BEGIN RSA PRIVATE KEY-----\nMIIE\nab+/=\nThe answer is 5.") == f"{REDACTED}\nThe answer is 5."
    )
    assert redact_text("https://me@corp.com:pw@h/x") == f"https://me@corp.com:{REDACTED}@h/x"
    assert redact_text("curl -u alice:pw https://x") == f"curl -u alice:{REDACTED} https://x"


def test_pathological_inputs_are_redacted_whole():
    """Inputs that once took quadratic time (benchmarks/redaction.py times them at full size) come out right."""
    assert redact_text("password=x " * 2000) == f"password={REDACTED} " * 2000
    begins = "-----BEGIN RSA PRIVATE KEY-----\n" * 500
    assert redact_text(begins) == "\n".join([REDACTED] * 500)  # each unterminated block, with its newline
    assert redact_text("key: " * 3000) == "key: " * 3000


def test_secret_names_are_judged_word_by_word():
    secret = ["HF_TOKEN", "hub_token", "token", "WANDB_API_KEY", "X-Api-Key", "apiKey", "accessToken", "OPENAI_KEY"]
    secret += [
        "db_password",
        "MLFLOW_TRACKING_PASSWORD",
        "Authorization",
        "client_secret",
        "train.extra_args.hub_token",
    ]
    plain = ["max_tokens", "n_tokens", "tokenizer", "eos_token", "token_lengths", "key", "cell_key", "ablate.train_key"]
    plain += ["sort_key", "keywords", "pass_rate", "api_key_env", "HF_TOKEN_PATH", "token_budget_reference", "author"]
    secret += [
        "PGPASSWORD",
        "DB_PASS",
        "MYSQL_PWD",
        "SMTP_PASS",
        "api_keys",
        "HF_TOKENS",
        "db_passwd",
        "ssh_passphrase",
    ]
    plain += ["num_tokens", "total_tokens", "pad_token", "pass_at_k", "passes", "public_key", "ssh_public_key"]
    plain += ["eval_keys", "special_tokens", "PWD", "OLDPWD", "pass", "pw"]
    assert [n for n in secret if not secret_name(n)] == []
    assert [n for n in plain if secret_name(n)] == []


def test_mappings_are_redacted_by_key_name_and_value_shape():
    spec = {
        "description": f"uses {SK_PROJ} and {HF}",
        "train": {"extra_args": {"hub_token": "anything", "max_grad_norm": 1.0}},
        "eval": {"sampling": {"max_tokens": 32768}},
        "launcher": {"slurm": {"setup": [f"export WANDB_API_KEY={HEX40}", "module load cuda"]}},
        "credentials": {"user": "me", "pass": "x"},
        "password": None,
        "secret": "",
    }
    out = redact(spec)
    text = json.dumps(out)
    assert not any(s in text for s in (SK_PROJ, HF, HEX40, "anything"))
    assert out["train"]["extra_args"] == {"hub_token": REDACTED, "max_grad_norm": 1.0}
    assert out["eval"] == spec["eval"] and out["launcher"]["slurm"]["setup"][1] == "module load cuda"
    assert out["credentials"] == REDACTED and out["password"] is None and out["secret"] == ""


def test_counts_under_data_labels_and_names_that_merely_mention_a_secret_are_kept():
    # maps keyed by data (source labels, topic names) whose values are counts, as stats.json and manifests have
    stats = {
        "by_source": {"oauth_traces": 10, "long_cot": 5, "secrets": 3},
        "source_mix": {"api_key_leaks": 0.5, "passwords": 0.5},
        "topic_mix": {"authorization": 1.0},
        "oauth_traces": 7,
        "password_reset": True,
        "tokens": {"total": 100},
    }
    assert redact(stats) == stats
    # but text under such a name, and anything under an unambiguous one, goes
    assert redact({"oauth_traces": "tok-1"}) == {"oauth_traces": REDACTED}
    assert redact({"password": 1234, "api_key": 98765, "hub_token": True}) == dict.fromkeys(
        ["password", "api_key", "hub_token"], REDACTED
    )
    assert redact({"by_source": {"x": f"see {HF}"}}) == {"by_source": {"x": f"see {REDACTED}"}}


def test_writers_redact_what_they_write(tmp_path: Path):
    text = write_text(tmp_path / "a.md", f"Question: does {SK_PROJ} leak?").read_text()
    assert SK_PROJ not in text and text.startswith("Question: does ")
    data = json.loads(write_json(tmp_path / "b.json", {"api_key": "k", "n_tokens": 3}).read_text())
    assert data == {"api_key": REDACTED, "n_tokens": 3}
    spec = yaml.safe_load(write_yaml(tmp_path / "c.yaml", {"setup": ["export HF_TOKEN=abc"]}).read_text())
    assert spec == {"setup": [f"export HF_TOKEN={REDACTED}"]}
    frame = pd.DataFrame({"cell": ["source=a"], "warnings": [f"saw {HF}"], "pass@1": [0.5], "n_tokens": [7]})
    table = pd.read_csv(write_csv(frame, tmp_path / "d.csv"))
    assert table.loc[0, "warnings"] == f"saw {REDACTED}" and table.loc[0, "pass@1"] == 0.5
    assert list(table.columns) == list(frame.columns)


def test_files_are_copied_redacted_by_kind(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    # a JSON string whose escaped quote follows a secret: text redaction could break the string, structure cannot
    (src / "rows.jsonl").write_text(json.dumps({"trace": 'password: hunter2"\nx', "n": 1}) + "\nnot json " + HF + "\n")
    (src / "m.json").write_text(json.dumps({"token": "t", "warnings": [f"see {SK_PROJ}"], "max_tokens": 8}))
    (src / "s.yaml").write_text("a:\n  password: pw1\n  max_tokens: 8\n")
    (src / "r.md").write_text(f"# Report\n\nexport OPENAI_API_KEY=sk-test-123\n{HF}\n")
    pd.DataFrame({"text": [f"the answer {HF}", None], "n_tokens": [1, 2]}).to_parquet(src / "g.parquet")
    png = bytes([0x89, 0x50, 0x4E, 0x47, 0xFF, 0xFE, 0x00])
    (src / "p.png").write_bytes(png)
    (src / "blob.bin").write_bytes(b"\xff\xfe\x00\x01")
    out = tmp_path / "out"
    for name in ("rows.jsonl", "m.json", "s.yaml", "r.md", "g.parquet", "p.png"):
        copy_redacted(src / name, out / name)
    rows = (out / "rows.jsonl").read_text().splitlines()
    assert json.loads(rows[0]) == {"trace": f"password: {REDACTED}\nx", "n": 1} and rows[1] == f"not json {REDACTED}"
    assert json.loads((out / "m.json").read_text()) == {
        "token": REDACTED,
        "warnings": [f"see {REDACTED}"],
        "max_tokens": 8,
    }
    assert yaml.safe_load((out / "s.yaml").read_text()) == {"a": {"password": REDACTED, "max_tokens": 8}}
    assert "sk-test-123" not in (out / "r.md").read_text() and HF not in (out / "r.md").read_text()
    frame = pd.read_parquet(out / "g.parquet")
    assert frame["text"].iloc[0] == f"the answer {REDACTED}" and frame["text"].isna().iloc[1]
    assert frame["n_tokens"].tolist() == [1, 2]
    assert (out / "p.png").read_bytes() == png
    with pytest.raises(ValueError, match="add a redactor"):  # a new binary kind cannot slip through unredacted
        copy_redacted(src / "blob.bin", out / "blob.bin")


def test_the_upload_sends_only_redacted_copies_and_leaves_the_sources(tmp_path: Path):
    class Client:
        def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
            self.sent = {p.relative_to(local_dir).as_posix(): p.read_text() for p in Path(local_dir).rglob("*.*")}

    source = tmp_path / "report.md"
    source.write_text(f"**Question.** Is {SK_PROJ} safe?\n")
    client = Client()
    log_artifacts(client, "run", {"report/report.md": source})
    assert client.sent == {"report/report.md": f"**Question.** Is {REDACTED} safe?\n"}
    assert SK_PROJ in source.read_text()  # the local file is the caller's: copied, never moved or changed


def test_environment_is_recorded_by_an_allow_list_of_names(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ABLATE_NOTE", "sk-test-123")
    monkeypatch.setenv("WANDB_API_KEY", HEX40)
    monkeypatch.setenv("HF_TOKEN", "plain")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://bob:s3cret@mlflow.example.com")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = environment_snapshot()["env"]
    assert "ABLATE_NOTE" not in env and "WANDB_API_KEY" not in env
    assert env["HF_TOKEN"] == REDACTED and env["OMP_NUM_THREADS"] == "1"
    assert env["MLFLOW_TRACKING_URI"] == f"https://bob:{REDACTED}@mlflow.example.com"
    assert "sk-test-123" not in json.dumps(environment_snapshot())


def test_store_records_are_redacted_when_published_and_model_files_are_not(tmp_path: Path):
    store = Store(tmp_path / "store")
    config = {"tracking": {"uri": "https://bob:s3cret@mlflow.example.com"}, "extra_args": {"hub_token": "t1"}}
    with store.build("train", "k1", {"config": config}) as b:
        (b.dir / "stats.json").write_text(json.dumps({"example": f"uses {HF}", "tokens": 5}))
        (b.dir / "train.log").write_text("launch --api-key sk-test-123\nloss 1.0\n")
        (b.dir / "train_args.json").write_text(json.dumps({"extra_args": {"hub_token": "t1"}}))
        (b.dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "auth_token": "kept"}))
        (b.dir / "train.jsonl").write_text(json.dumps({"trace": f"data {HF}"}) + "\n")
    out = store.path("train", "k1")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["tracking"]["uri"] == f"https://bob:{REDACTED}@mlflow.example.com"
    assert manifest["config"]["extra_args"]["hub_token"] == REDACTED
    assert json.loads((out / "stats.json").read_text()) == {"example": f"uses {REDACTED}", "tokens": 5}
    assert "sk-test-123" not in (out / "train.log").read_text()
    assert "t1" not in (out / "train_args.json").read_text()
    # a model directory and the data a stage reads are the stage's, byte for byte
    assert json.loads((out / "tokenizer_config.json").read_text())["auth_token"] == "kept"
    assert HF in (out / "train.jsonl").read_text()
    with pytest.raises(RuntimeError), store.build("train", "k2") as b:
        raise RuntimeError(f"upload to https://u:pw-in-url@hub.example.com failed with {SK_PROJ}")
    failed = (tmp_path / "store" / "train" / "k2.failed.json").read_text()
    assert "pw-in-url" not in failed and SK_PROJ not in failed and REDACTED in failed


def test_records_without_secrets_are_left_as_written(tmp_path: Path):
    (tmp_path / "metrics.json").write_text('{"pass@1": 0.5,   "n_tokens": 3}')
    stats = '{"source_mix": {"oauth_traces": 1.0}, "model_dir": "/ckpt/sk-llama-finetune-v2-abcdef"}'
    (tmp_path / "stats.json").write_text(stats)
    assert redact_records(tmp_path) == []
    assert (tmp_path / "metrics.json").read_text() == '{"pass@1": 0.5,   "n_tokens": 3}'
    assert (tmp_path / "stats.json").read_text() == stats


def test_a_record_that_cannot_be_redacted_never_fails_the_publish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Publishing runs after a training deleted its checkpoints: an error there would retrain from scratch."""
    import framework.redaction as redaction

    store = Store(tmp_path / "store")
    deep = "[" * 50_000 + "]" * 50_000  # parses only with a recursion deeper than Python allows
    with store.build("train", "k1") as b:
        (b.dir / "stats.json").write_text(f'{{"token": "{HF}", "deep": {deep}}}')
        (b.dir / "train.log").write_text(f"loss 1.0 {HF}\n")
        (b.dir / "metrics.json").write_text('{"loss": 1.0}')
    out = store.path("train", "k1")
    assert store.is_done("train", "k1") and HF not in (out / "stats.json").read_text()
    assert (out / "train.log").read_text() == f"loss 1.0 {REDACTED}\n"

    real = redaction._redact_document
    monkeypatch.setattr(  # a record no redactor can handle: withheld, not published as it was
        redaction,
        "_redact_document",
        lambda text, suffix: (_ for _ in ()).throw(MemoryError()) if "withhold-me" in text else real(text, suffix),
    )
    with store.build("train", "k2") as b:
        (b.dir / "stats.json").write_text(json.dumps({"note": f"withhold-me {HF}"}))
        (b.dir / "metrics.json").write_text('{"loss": 2.0}')
    out = store.path("train", "k2")
    assert store.is_done("train", "k2")
    assert json.loads((out / "stats.json").read_text()) == {
        "withheld": "withheld: this record could not be redacted (MemoryError)"
    }
    assert json.loads((out / "metrics.json").read_text()) == {"loss": 2.0}


def test_parquet_is_redacted_a_thousand_rows_at_a_time(tmp_path: Path):
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"text": [f"row {i} {HF}" for i in range(3000)], "n": range(3000)})
    frame.to_parquet(tmp_path / "all.parquet", row_group_size=3000)  # one row group: the reader's batch decides
    copy_redacted(tmp_path / "all.parquet", tmp_path / "out.parquet")
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1024, 1024, 952]
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["text"].tolist() == [f"row {i} {REDACTED}" for i in range(3000)] and out["n"].tolist() == list(
        range(3000)
    )


def test_the_report_attached_to_the_sweeps_run_is_redacted(tmp_path: Path, tmp_path_factory):
    from mlflow import MlflowClient

    from framework.report import write_report

    (tmp_path / "mlflow").mkdir()
    shutil.copy(migrated_db(tmp_path_factory), tmp_path / "mlflow" / "mlflow.db")
    description = f"Does the source matter? Keys: {SK_PROJ}, {HF}; export OPENAI_API_KEY=sk-test-123"
    sw = synthetic_sweep(tmp_path, seeds=(0,), description=description)
    out = tmp_path / "results" / "synth"
    report = write_report(sw.loaded, sw.plan, sw.store, out)
    local = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix != ".png")
    client = MlflowClient(sw.loaded.spec.tracking.uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("synth").experiment_id])
    dl = Path(client.download_artifacts(parent.info.run_id, "report", str(tmp_path / "dl")))
    assert (dl / "report.md").is_file() and (dl / "tables" / "cells.csv").is_file()
    uploaded = "".join(p.read_text(errors="replace") for p in dl.rglob("*") if p.is_file() and p.suffix != ".png")
    for secret in (SK_PROJ, HF, "sk-test-123"):
        assert secret not in local and secret not in uploaded
    assert "Does the source matter? Keys: " in report.read_text()  # the question itself is kept
