"""The train stage for real: ZeRO-3 over 2 CPU processes, against a single process, a direct loss computation,
transformers reloading the checkpoint, generation that stops, and a SIGKILLed job that resumes.

Four launches share one tiny model and one training set: a 2-process run (with the worker's debug report), a
1-process run, and a 2-process run killed after its first checkpoint and then resumed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.spec import LoadedSpec, spec_from_dict
from framework.spec.models import TinyModelSpec
from framework.spec.yamlsrc import Source
from framework.store import Store
from framework.sweep.execute import execute
from framework.sweep.plan import Plan, build_plan
from framework.train.worker import COMPLETE, CRASH_ENV, DEBUG_ENV, PAUSE_ENV
from tests.helpers import TINY_MODEL

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N_EXAMPLES, EPOCHS, CHECKPOINT_AT = 20, 20, 25
SPEC: dict[str, Any] = {
    "name": "train-it",
    "model": TINY_MODEL,
    "pool": [{"preset": "toy"}],
    "prompt": {"user_template": "{problem}"},
    "train": {  # constant LR: a shorter run follows the same schedule, step for step
        "epochs": EPOCHS,
        "learning_rate": 3.0e-3,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "max_seq_len": 256,
        "gradient_checkpointing": False,
        "processes": 2,
    },
}
STEPS = N_EXAMPLES * EPOCHS // 4
ONE_PROC_EPOCHS = 3  # the single-process comparison covers the first 15 steps


def toy_like_rows() -> list[dict[str, Any]]:
    """Short arithmetic chains of varied length, each ending in a boxed answer (varied target token counts)."""
    rng = random.Random(0)
    rows = []
    for i in range(N_EXAMPLES):
        terms = [rng.randint(1, 60) for _ in range(rng.randint(2, 4))]
        steps, total = [], terms[0]
        for t in terms[1:]:
            steps.append(f"{total} + {t} = {total + t} .")
            total += t
        problem = f"add {' , '.join(map(str, terms))} ."
        trace = f"we add step by step . {' '.join(steps)} the answer is \\boxed {{ {total} }}"
        rows.append({"problem_id": f"p{i}", "problem": problem, "trace": trace})
    return rows


def plan_for(spec_data: dict[str, Any]) -> tuple[LoadedSpec, Plan]:
    spec = spec_from_dict(spec_data)
    return LoadedSpec(spec, None, Source(data=spec_data)), build_plan(spec)


def publish_inputs(store: Store, plan: Plan, model_dir: Path, rows: list[dict[str, Any]]) -> str:
    """Put the tiny model and the training set in the store as the model and data stages would; return the
    train key."""
    import shutil

    model_job, data_job = plan.by_stage("model")[0], plan.by_stage("data")[0]
    with store.build("model", model_job.key) as b:
        if b is not None:
            shutil.copytree(model_dir, b.dir, dirs_exist_ok=True)
    with store.build("data", data_job.key) as b:
        if b is not None:
            (b.dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return plan.by_stage("train")[0].key


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from framework.model.stage import build, toy_corpus

    out = tmp_path_factory.mktemp("tiny")
    build(TinyModelSpec.model_validate(SPEC["model"]["tiny"]), out, toy_corpus())
    return out


def train_in(
    root: Path,
    tiny_dir: Path,
    spec_data: dict[str, Any],
    env: dict[str, str] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> Path:
    """Run the train stage (in this process) in a fresh store; return its published directory."""
    loaded, plan = plan_for(spec_data)
    store = Store(root)
    key = publish_inputs(store, plan, tiny_dir, toy_like_rows() if rows is None else rows)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        assert execute(loaded, plan, store, "train", key)
    return store.path("train", key)


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> tuple[Path, Path]:
    """The 2-process ZeRO-3 run, with the worker's per-rank sample log and final logits."""
    root = tmp_path_factory.mktemp("zero3-2")
    debug = root / "debug"
    return train_in(root, tiny_dir, SPEC, {DEBUG_ENV: str(debug)}), debug


@pytest.fixture(scope="module")
def one_proc(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    spec = copy.deepcopy(SPEC)
    spec["train"].update(processes=1, epochs=ONE_PROC_EPOCHS)
    return train_in(tmp_path_factory.mktemp("zero3-1"), tiny_dir, spec)


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """ZeRO-3 over 2 processes with the LM head and loss computed 16 target tokens at a time, lean activations,
    each decoder layer's weights gathered as one unit, and torch's own linear in place of DeepSpeed's."""
    spec = copy.deepcopy(SPEC)
    spec["train"].update(
        epochs=ONE_PROC_EPOCHS,
        loss_chunk_tokens=16,
        lean_activations=True,
        zero3_gather_per_layer=True,
        zero3_memory_efficient_linear=False,
    )
    return train_in(tmp_path_factory.mktemp("zero3-chunked"), tiny_dir, spec)


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    """ZeRO-3 over 2 processes with the optimizer states in CPU memory, stepped by DeepSpeed's CPU AdamW."""
    spec = copy.deepcopy(SPEC)
    spec["train"].update(epochs=ONE_PROC_EPOCHS, offload_optimizer=True)
    return train_in(tmp_path_factory.mktemp("zero3-offload"), tiny_dir, spec)


def metrics(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text())


def test_ranks_train_on_different_examples(two_procs: tuple[Path, Path]) -> None:
    _, debug = two_procs
    seen = [json.loads((debug / f"samples_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == STEPS  # one micro-batch of 2 per rank per step
    for step in range(STEPS):
        batches = [sorted(i for entry in s if entry[0] == step for i in entry[1:]) for s in seen]
        assert len(batches[0]) == len(batches[1]) == 2 and not set(batches[0]) & set(batches[1]), (step, batches)
        assert sorted(batches[0] + batches[1]) == [(4 * step + j) % N_EXAMPLES for j in range(4)]


def test_examples_that_do_not_divide_among_the_ranks_are_each_trained_once_per_epoch(tmp_path: Path, tiny_dir: Path):
    # 5 examples on 2 ranks: the data loader would give rank 1 example 0 again to even the last step up.
    spec = copy.deepcopy(SPEC)
    spec["train"].update(epochs=2, global_batch_size=2, micro_batch_size=1)
    debug = tmp_path / "debug"
    out = train_in(tmp_path / "store", tiny_dir, spec, {DEBUG_ENV: str(debug)}, rows=toy_like_rows()[:5])
    seen = [entry for r in (0, 1) for entry in json.loads((debug / f"samples_rank{r}.json").read_text())]
    for epoch in (0, 1):  # 3 steps per epoch; -1 is the filler that trains nothing
        assert sorted(i for step, *ids in seen if step // 3 == epoch for i in ids) == [-1, 0, 1, 2, 3, 4]
    assert metrics(out)["steps"] == 6


def test_first_step_loss_is_the_token_mean_over_the_global_batch(two_procs: tuple[Path, Path], tiny_dir: Path):
    """Sum of token losses / target tokens of the whole step: not a mean of per-micro-batch means."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from framework.formatting import encode_rows
    from framework.spec.models import PromptSpec

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    examples, _ = encode_rows(tokenizer, toy_like_rows()[:4], PromptSpec(user_template="{problem}"), 256, "drop")
    total, count, per_example = 0.0, 0, []
    with torch.no_grad():
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(ex["labels"][1:])
            loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
            n = int((labels != -100).sum())
            total, count = total + float(loss), count + n
            per_example.append(float(loss) / n)
    first = metrics(two_procs[0])["loss_curve"][0]
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(total / count, rel=1e-5)
    assert abs(sum(per_example) / 4 - total / count) > 1e-3  # the two definitions differ on this data


def test_two_processes_match_one(two_procs: tuple[Path, Path], one_proc: Path) -> None:
    """Same examples per step, split over 2 ranks × 1 micro-batch or 1 rank × 2 accumulated micro-batches.

    fp32 reductions run in a different order, so the curves drift apart slowly (~1e-6 after 15 steps here).
    """
    two, one = metrics(two_procs[0]), metrics(one_proc)
    assert two["layout"]["world_size"] == 2 and two["layout"]["grad_accum"] == 1
    assert one["layout"]["world_size"] == 1 and one["layout"]["grad_accum"] == 2
    assert len(one["loss_curve"]) == N_EXAMPLES * ONE_PROC_EPOCHS // 4
    for a, b in zip(two["loss_curve"], one["loss_curve"]):
        assert a["step"] == b["step"] and a["lr"] == b["lr"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
        # Adam barely notices a gradient scaled by the rank or accumulation count; the gradient norm does
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), (a, b)


def test_an_offloaded_optimizer_trains_like_the_default_one(two_procs: tuple[Path, Path], offloaded: Path) -> None:
    """DeepSpeed's CPU AdamW (the paper recipe's) against the Trainer's torch AdamW: same schedule, and the loss
    curves agree step for step up to the two implementations' rounding."""
    plain, off = metrics(two_procs[0]), metrics(offloaded)
    assert len(off["loss_curve"]) == N_EXAMPLES * ONE_PROC_EPOCHS // 4
    for a, b in zip(plain["loss_curve"], off["loss_curve"]):
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3), (a, b)
    assert plain["loss_curve"][0]["grad_norm"] == pytest.approx(off["loss_curve"][0]["grad_norm"], rel=1e-4)
    assert off["final_loss"] < off["loss_curve"][0]["loss"]


def test_chunked_loss_lean_activations_and_whole_layer_gathers_train_like_the_model_under_zero3(
    two_procs: tuple[Path, Path], chunked: Path
) -> None:
    """Same loss curve step for step (the tiny model's tied LM head is gathered by ZeRO-3 in every chunk and in
    its recomputation, each layer's weights by the layer's own hook, in forward and in the lean backward); the
    run's checkpoint passed the stage's own reload check."""
    plain, chunk = metrics(two_procs[0]), metrics(chunked)
    assert len(chunk["loss_curve"]) == N_EXAMPLES * ONE_PROC_EPOCHS // 4
    for a, b in zip(plain["loss_curve"], chunk["loss_curve"]):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), (a, b)
    assert (chunked / "model" / "config.json").is_file()


def test_checkpoint_is_complete_and_reloads_with_the_same_logits(two_procs: tuple[Path, Path]) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    out, debug = two_procs
    model_dir = out / "model"
    assert not (out / "checkpoints").exists()  # ZeRO shards removed after consolidation
    config = AutoConfig.from_pretrained(model_dir)
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    assert shapes == {k: s for k, s in expected.items() if k != "lm_head.weight"}  # tied to the embeddings
    assert shapes["model.embed_tokens.weight"] == (config.vocab_size, config.hidden_size)
    dumped = torch.load(debug / "logits.pt")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([dumped["input_ids"]])).logits
    torch.testing.assert_close(logits, dumped["logits"], rtol=1e-5, atol=1e-5)


def test_trained_model_stops_at_the_turn_end(two_procs: tuple[Path, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from framework.formatting import render_prompt
    from framework.spec.models import PromptSpec

    model_dir = two_procs[0] / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    stops = set(model.generation_config.eos_token_id)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    for row in toy_like_rows()[:3]:
        text = render_prompt(tokenizer, row["problem"], PromptSpec(user_template="{problem}"))
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        new = model.generate(ids, max_new_tokens=120, do_sample=False)[0, ids.shape[1] :].tolist()
        assert len(new) < 120 and new[-1] in stops, tokenizer.decode(new)
        assert tokenizer.decode(new[:-1]).endswith("}")  # stops where every training trace ended


def test_metrics_and_manifest(two_procs: tuple[Path, Path]) -> None:
    out = two_procs[0]
    m = metrics(out)
    assert m["steps"] == STEPS and m["examples"]["kept"] == N_EXAMPLES and m["examples"]["dropped"] == 0
    assert m["tokens"]["target_trained"] == m["tokens"]["target_per_epoch"] * EPOCHS
    assert m["final_loss"] < m["loss_curve"][0]["loss"] / 3
    assert all(e["lr"] is not None for e in m["loss_curve"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["train"]["final_loss"] == m["final_loss"] and manifest["train"]["steps"] == STEPS
    assert "train.log" in os.listdir(out) and "train_args.json" in os.listdir(out)


def test_a_training_killed_after_saving_but_before_publication_is_not_trained_again(
    tmp_path: Path, tiny_dir: Path, two_procs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed (a time limit) while publishing a trained 64 GB model: the next attempt publishes what was saved."""
    import shutil

    from framework.train import stage as train

    loaded, plan = plan_for(SPEC)
    store = Store(tmp_path)
    key = publish_inputs(store, plan, tiny_dir, toy_like_rows())
    work = store.work_path("train", key)
    shutil.copytree(two_procs[0], work)  # what the attempt left: its verified model and the worker's report
    for name in ("SUCCESS", "manifest.json", "metrics.json"):
        (work / name).unlink()
    monkeypatch.setattr(train, "run_logged", lambda *a, **k: pytest.fail("the finished training ran again"))
    assert execute(loaded, plan, store, "train", key)
    assert metrics(store.path("train", key))["final_loss"] == metrics(two_procs[0])["final_loss"]
    assert (store.path("train", key) / "model" / "config.json").is_file()


# --------------------------------------------------------------------------------------------- failures
def test_model_problems_stop_the_stage_before_launch(tmp_path: Path, tiny_dir: Path) -> None:
    from framework.model_source import ModelError

    spec = copy.deepcopy(SPEC)
    spec["train"]["max_seq_len"] = 4096  # the tiny model takes 512
    loaded, plan = plan_for(spec)
    store = Store(tmp_path)
    key = publish_inputs(store, plan, tiny_dir, toy_like_rows())
    with pytest.raises(ModelError, match="exceeds the model's max_position_embeddings 512"):
        execute(loaded, plan, store, "train", key)
    assert not (store.work_path("train", key) / "train.log").exists()  # nothing was launched


def test_a_failing_worker_is_reported_with_its_cause(tmp_path: Path, tiny_dir: Path) -> None:
    from framework.train.stage import TrainError

    spec = copy.deepcopy(SPEC)
    spec["train"].update(max_seq_len=16, overlong="drop", processes=1)  # no prompt fits in 16 tokens
    loaded, plan = plan_for(spec)
    store = Store(tmp_path)
    key = publish_inputs(store, plan, tiny_dir, toy_like_rows())
    with pytest.raises(TrainError) as info:
        execute(loaded, plan, store, "train", key)
    message = str(info.value)
    assert "no training example fits train.max_seq_len 16" in message and "'dropped': 20" in message
    assert "last lines of" in message and str(store.work_path("train", key) / "train.log") in message
    assert store.status("train", key).state == "failed" and not store.is_done("train", key)


def test_a_crashed_rank_ends_the_job_at_once_not_after_the_shutdown_grace(tmp_path: Path, tiny_dir: Path) -> None:
    """Rank 1 dies mid-run; rank 0 then waits in a collective that will never finish. torchrun sends it TERM and
    grants TORCH_ELASTIC_SHUTDOWN_TIMEOUT (900 s here) for a checkpointed stop, but without the stage's STOP file
    the TERM is torchrun ending the job, and the worker must go at once."""
    from framework.train.stage import TrainError

    spec = copy.deepcopy(SPEC)
    spec["train"]["epochs"] = 2
    loaded, plan = plan_for(spec)
    store = Store(tmp_path)
    key = publish_inputs(store, plan, tiny_dir, toy_like_rows())
    t0 = time.monotonic()
    with pytest.MonkeyPatch.context() as mp, pytest.raises(TrainError):
        mp.setenv(CRASH_ENV, "1:3")
        execute(loaded, plan, store, "train", key)
    log = (store.work_path("train", key) / "train.log").read_text()
    assert "'loss':" in log  # it failed in the loop, not before
    grace = next(line for line in log.splitlines() if "closing signal SIGTERM" in line)
    assert grace and time.monotonic() - t0 < 200, f"the failed job took {time.monotonic() - t0:.0f} s to end"


def test_a_killed_build_lock_does_not_hang_the_next_run(tmp_path: Path, tiny_dir: Path) -> None:
    """A build of DeepSpeed's CPU op killed half way leaves torch's lock file behind, and every later run used to
    wait on it forever. The run removes it (under an flock no build holds) and trains."""
    import shutil

    from framework.train.jit_ops import BATON, extensions_dir

    ops = tmp_path / "torch_extensions"
    if extensions_dir(os.environ).is_dir():  # this environment's build, so the test need not compile again
        shutil.copytree(extensions_dir(os.environ), ops, ignore=shutil.ignore_patterns(BATON, ".ablate-build.lock"))
    (ops / "deepspeed_shm_comm").mkdir(parents=True, exist_ok=True)
    (ops / "deepspeed_shm_comm" / BATON).touch()
    spec = copy.deepcopy(SPEC)
    spec["train"]["epochs"] = 1
    out = train_in(tmp_path / "store", tiny_dir, spec, {"TORCH_EXTENSIONS_DIR": str(ops)})
    assert metrics(out)["loss_curve"]
    assert not (ops / "deepspeed_shm_comm" / BATON).exists()
    assert "removed the lock of a killed build" in (out / "train.log").read_text()


# ------------------------------------------------------------------------------------------ kill, resume
KILLABLE = """
import json, sys
from framework.sweep.execute import execute
from framework.sweep.plan import build_plan
from framework.spec import LoadedSpec, spec_from_dict
from framework.spec.yamlsrc import Source
from framework.store import Store
data = json.loads(sys.argv[2])
spec = spec_from_dict(data)
plan = build_plan(spec)
execute(LoadedSpec(spec, None, Source(data=data)), plan, Store(sys.argv[1]), "train", plan.by_stage("train")[0].key)
"""


def _processes_mentioning(needle: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@contextlib.contextmanager
def killed_after_checkpoint(
    root: Path, tiny_dir: Path, spec: dict[str, Any], rows: list[dict[str, Any]], env: dict[str, str] | None = None
) -> Iterator[tuple[Store, str]]:
    """A 2-process run SIGKILLed (whole process group) while paused after its first checkpoint."""
    _, plan = plan_for(spec)
    store = Store(root)
    key = publish_inputs(store, plan, tiny_dir, rows)
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, **(env or {}), PAUSE_ENV: "120", "PYTHONPATH": path}
    argv = [sys.executable, "-c", KILLABLE, str(root), json.dumps(spec)]
    err = root / "stage.err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    at = spec["train"]["checkpoint_every_steps"]
    marker = store.work_path("train", key) / "checkpoints" / f"checkpoint-{at}" / COMPLETE
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        yield store, key
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def killed_run(tmp_path: Path, tiny_dir: Path) -> Iterator[tuple[Store, str, dict[str, Any]]]:
    spec = copy.deepcopy(SPEC)
    spec["train"]["checkpoint_every_steps"] = CHECKPOINT_AT
    with killed_after_checkpoint(tmp_path, tiny_dir, spec, toy_like_rows()) as (store, key):
        yield store, key, spec


def test_killed_training_resumes_to_the_same_loss(killed_run, tiny_dir: Path, two_procs: tuple[Path, Path]):
    store, key, spec = killed_run
    work = store.work_path("train", key)
    args_file = str(work / "train_args.json")
    deadline = time.monotonic() + 20
    while _processes_mentioning(args_file):  # workers die with torchrun (parent-death signal), not orphaned
        assert time.monotonic() < deadline, f"orphaned training processes: {_processes_mentioning(args_file)}"
        time.sleep(0.2)
    assert not store.is_done("train", key)

    loaded, plan = plan_for(spec)
    assert execute(loaded, plan, store, "train", key)
    resumed, reference = metrics(store.path("train", key)), metrics(two_procs[0])
    assert resumed["resumed_from_step"] == CHECKPOINT_AT
    assert json.loads((store.path("train", key) / "manifest.json").read_text())["resumed"] is True
    assert [e["step"] for e in resumed["loss_curve"]] == list(range(1, STEPS + 1))
    assert resumed["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-5)
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)  # the whole run's mean
    for a, b in zip(resumed["loss_curve"], reference["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
    assert not (store.path("train", key) / "checkpoints").exists()


@pytest.mark.parametrize(
    "sig, everyone",
    [(signal.SIGUSR1, False), (signal.SIGTERM, True)],
    ids=["usr1-to-the-stage", "term-to-every-process"],
)
def test_signalled_training_checkpoints_stops_and_resumes_to_the_same_loss(
    sig: signal.Signals, everyone: bool, tmp_path: Path, tiny_dir: Path, two_procs: tuple[Path, Path]
):
    """USR1 to the stage process only (what Slurm sends before a time limit, and what the job script forwards),
    or TERM to the stage, torchrun and every worker at once (what Slurm sends to all of a job's processes when it
    preempts it): the workers save a checkpoint at the next step end and stop, the stage raises TrainingStopped,
    and the next run resumes."""
    spec = copy.deepcopy(SPEC)  # no periodic checkpoints: the only checkpoint is the one the signal asks for
    _, plan = plan_for(spec)
    store = Store(tmp_path)
    key = publish_inputs(store, plan, tiny_dir, toy_like_rows())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", KILLABLE, str(tmp_path), json.dumps(spec)]
    err = tmp_path / "stage.err"
    log = store.work_path("train", key) / "train.log"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 240
        while "'loss':" not in (log.read_text(errors="replace") if log.exists() else ""):  # training has started
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "training did not start within 240 s"
            time.sleep(0.2)
        targets = [proc.pid]
        if everyone:
            targets += _processes_mentioning(str(store.work_path("train", key) / "train_args.json"))
            assert len(targets) >= 4, targets  # the stage, torchrun (behind its guard) and two workers
        for pid in targets:
            os.kill(pid, sig)
        assert proc.wait(120) != 0  # `ablate exec` turns TrainingStopped (a RetryLater) into exit 75
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert f"TrainingStopped: training interrupted by {sig.name}: stopped at step" in err.read_text()
    assert not store.is_done("train", key)
    saved = [p for p in (store.work_path("train", key) / "checkpoints").glob("checkpoint-*") if (p / COMPLETE).exists()]
    assert len(saved) == 1 and 0 < int(saved[0].name.split("-")[1]) < STEPS

    loaded, plan = plan_for(spec)
    assert execute(loaded, plan, store, "train", key)
    resumed, reference = metrics(store.path("train", key)), metrics(two_procs[0])
    assert resumed["resumed_from_step"] == int(saved[0].name.split("-")[1])
    assert [e["step"] for e in resumed["loss_curve"]] == list(range(1, STEPS + 1))
    for a, b in zip(resumed["loss_curve"], reference["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)


def test_shuffling_every_epoch_reads_each_example_once_per_epoch_and_resumes_in_the_same_order(
    tmp_path: Path, tiny_dir: Path
):
    """`shuffle: every_epoch`: a new order each epoch, and a run killed mid-epoch resumes with the very batches
    and losses of an uninterrupted one (the order comes from the seed and the epoch, not from process state)."""
    spec = copy.deepcopy(SPEC)  # 6 examples, 3 steps of 2 per epoch; checkpoint at step 4, mid-epoch 2
    spec["train"].update(
        epochs=3, global_batch_size=2, micro_batch_size=1, shuffle="every_epoch", checkpoint_every_steps=4
    )
    rows = toy_like_rows()[:6]

    def steps(debug: Path) -> dict[int, list[int]]:
        seen = [entry for r in (0, 1) for entry in json.loads((debug / f"samples_rank{r}.json").read_text())]
        out: dict[int, list[int]] = {}
        for step, *ids in seen:
            out.setdefault(step, []).extend(ids)
        return {k: sorted(v) for k, v in sorted(out.items())}

    reference = train_in(tmp_path / "whole", tiny_dir, spec, {DEBUG_ENV: str(tmp_path / "d-whole")}, rows=rows)
    whole = steps(tmp_path / "d-whole")
    epochs = [[whole[s] for s in range(3 * e, 3 * e + 3)] for e in range(3)]
    assert all(sorted(i for batch in epoch for i in batch) == list(range(6)) for epoch in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # reshuffled, not one order repeated

    with killed_after_checkpoint(tmp_path / "killed", tiny_dir, spec, rows) as (store, key):
        loaded, plan = plan_for(spec)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(DEBUG_ENV, str(tmp_path / "d-resumed"))
            assert execute(loaded, plan, store, "train", key)
    resumed_steps = steps(tmp_path / "d-resumed")
    assert list(resumed_steps) == [4, 5, 6, 7, 8] and all(resumed_steps[s] == whole[s] for s in resumed_steps)
    resumed, ref = metrics(store.path("train", key)), metrics(reference)
    assert resumed["resumed_from_step"] == 4
    assert resumed["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-5)


def test_a_training_that_diverges_fails_rather_than_finishing_with_a_loss_of_zero(tmp_path: Path, tiny_dir: Path):
    """A base model with a NaN weight (a broken checkpoint, or a run gone unstable) gives NaN losses. The Trainer
    would log them as 0.0 and save NaN weights, a run that seems to fit its data; the stage must fail instead."""
    import shutil

    from safetensors.torch import load_file, save_file

    from framework.train.stage import TrainError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = load_file(broken / "model.safetensors")
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    spec = copy.deepcopy(SPEC)
    spec["train"]["epochs"] = 1
    with pytest.raises(TrainError, match=r"training diverged at step 1: loss = nan"):
        train_in(tmp_path / "store", broken, spec)
