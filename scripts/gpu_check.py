"""Stage driver of the GPU check (called by scripts/gpu_check.sh, which installs the wheels first).

Runs the stages of :func:`stage_table` one after the other, each as a subprocess with its own
time budget, within one overall budget (``--budget``). After every stage it rewrites ONE JSON
line, ``OUT/gpu_check.json`` (stage -> status, seconds, figures), so a run cut short by the outer
timeout still leaves the stages it finished; all output goes to ``OUT/gpu_check.log``.

    python scripts/gpu_check.py --out OUT --data .whl/moses_sample.smi.gz [--device cuda] [--budget 450]
    python scripts/gpu_check.py --dry-run          # list the stages and their commands; runs nothing
    python scripts/gpu_check.py --stages env,main_job ...   # a subset

The stage commands live in :func:`stage_table`: edit them there. This module imports only the
standard library (the dry run works anywhere); ``--verify-run`` imports the package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
MAIN_RUN, TORCHRUN_RUN = "main-quick", "torchrun-1"
# copied from each run directory into OUT (checkpoints stay behind: they are large)
MIN_STAGE_S = 5.0  # a stage is not started with less of the overall budget left
RUN_FILES = ("metrics.json", "metrics.jsonl", "run.json", "config.toml", "train.log", "samples.txt")


@dataclass
class Context:
    """What the stage commands are built from."""

    python: str
    data: str
    out: Path
    work: Path
    device: str
    train_flags: set[str] | None = None  # flags of `train.py --help`; None in a dry run


@dataclass
class Stage:
    """One step of the check: commands run in order (sharing ``budget_s``) and how to judge them."""

    name: str
    budget_s: int
    commands: list[list[str]]
    judge: Callable[["Context", list["Outcome"]], tuple[bool, dict[str, Any]]]
    what: str = ""


@dataclass
class Outcome:
    rc: int | None  # None: killed at the budget
    output: str
    seconds: float


@dataclass
class StageResult:
    status: str  # pass | fail | timeout | skipped
    seconds: float = 0.0
    budget_s: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""


# --- the stages -----------------------------------------------------------------------------------
ENV_SNIPPET = r"""
import importlib, json, platform
import torch
out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "cuda_available": torch.cuda.is_available(), "gpus": torch.cuda.device_count()}
if torch.cuda.is_available():
    out["gpu"] = torch.cuda.get_device_name(0)
    out["bf16_supported"] = torch.cuda.is_bf16_supported()
    out["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
import torch.distributed as td
out["nccl_available"] = td.is_available() and td.is_nccl_available()
missing = []
for name in ("discrete_rae", "rdkit", "nltk", "selfies", "tqdm", "sklearn", "numpy", "PIL"):
    try:
        mod = importlib.import_module(name)
        out[name] = getattr(mod, "__version__", "?")
    except ImportError as err:
        missing.append(f"{name} ({err})")
import discrete_rae.catalog as catalog
import discrete_rae.registry as reg
catalog.load_all()
out["models"] = len(reg.MODELS.names())
out["missing"] = missing
print(json.dumps(out))
"""


def stage_table(ctx: Context) -> list[Stage]:
    """The stages, in order. Budgets add up to 400 s; with the wheel install (at most 45 s) that fits
    the outer script's global limit of 470 s, under 8 minutes."""
    py, data, dev, work = ctx.python, ctx.data, ctx.device, ctx.work
    data_dir = str(work / "data")
    runs = str(work / "runs")
    bf16 = ["--precision", "bf16"] if dev.startswith("cuda") else []
    speed = [py, "benchmarks/gpu_speed.py"]
    paper = ["--domain", "molecules", "--model", "grammar_rae", "--preset", "paper", "--dataset", data,
             "--data-dir", data_dir, "--device", dev, "-q"]
    main_job = [py, "train.py", "--domain", "molecules", "--model", "grammar_rae", "--preset", "quick",
                "--dataset", data, "--n-train", "40000", "--epochs", "2", "--max-minutes", "1.2",
                "--device", dev, "--runs-dir", runs, "--run-name", MAIN_RUN, "--overwrite", "--data-dir", data_dir,
                "-q", *fixed_steps(ctx)]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    return [
        Stage("env", 25, [[py, "-c", ENV_SNIPPET]], judge_env,
              "versions, GPU, imports of every package the check needs"),
        Stage("cuda_tests", 85,
              [[py, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider",
                "--junitxml", str(ctx.out / "cuda_tests.xml")]], judge_pytest,
              "tests marked cuda: the model zoo on the GPU, bf16 vs fp32, checkpoints across devices, "
              "greedy decoding GPU == CPU"),
        Stage("train_speed", 55,
              [[*speed, "train", *paper, *bf16, "--n-train", "20000", "--n-test", "100", "--steps", "200",
                "--warmup", "10", "--max-seconds", "25", "--epoch-size", "250000"]], judge_json,
              "paper-preset GrammarRAE training steps/s and molecules/s, projected 250k-molecule epoch"),
        Stage("decode_speed", 40,
              [[*speed, "decode", *paper, "--n-train", "2000", "--n-test", "100", "--n", "10000", "--batch", "2500",
                "--logits-n", "10000"]], judge_json,
              "greedy grammar decoding samples/s with every decoding mask on"),
        Stage("main_job", 105, [main_job], judge_main_job,
              "quick-preset main job on the carried molecules: train, sample, RDKit evaluation"),
        Stage("torchrun", 90,
              [[*torchrun, "train.py", "--domain", "molecules", "--model", "grammar_rae", "--preset", "smoke",
                "--dataset", data, "--n-train", "4000", "--epochs", "1", "--device", dev, "--runs-dir", runs,
                "--run-name", TORCHRUN_RUN, "--overwrite", "--data-dir", data_dir, "-q"],
               [py, "scripts/gpu_check.py", "--verify-run", str(work / "runs" / TORCHRUN_RUN)],
               [*torchrun, "scripts/gpu_nccl.py", str(work / "nccl"), data, data_dir, "--device", dev]],
              judge_torchrun,
              "torchrun --nproc_per_node=1: the CLI trains one epoch and checkpoints; a DDP-wrapped trainer "
              "over NCCL (SyncBatchNorm, all-reduce) trains one epoch and checkpoints"),
    ]


def fixed_steps(ctx: Context) -> list[str]:
    """A fixed-step training flag for the main job, if this version of train.py has one."""
    if ctx.train_flags is None:
        return []
    for flag in ("--max-steps", "--steps"):
        if flag in ctx.train_flags:
            return [flag, "1000"]
    return []


def train_help_flags(python: str) -> set[str]:
    """The long options that ``train.py --help`` lists (empty if it fails)."""
    try:
        proc = subprocess.run([python, "train.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))


# --- judging ------------------------------------------------------------------------------------
def last_json(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def judge_env(ctx: Context, outs: list[Outcome]) -> tuple[bool, dict[str, Any]]:
    figures = last_json(outs[-1].output) or {}
    gpu_ok = bool(figures.get("cuda_available")) or not ctx.device.startswith("cuda")
    return bool(figures) and gpu_ok and not figures.get("missing"), figures


def judge_json(ctx: Context, outs: list[Outcome]) -> tuple[bool, dict[str, Any]]:
    figures = last_json(outs[-1].output) or {}
    return outs[-1].rc == 0 and bool(figures) and figures.get("losses_finite", True) is not False, figures


def pytest_counts(xml_path: Path, output: str) -> dict[str, int]:
    """passed / failed / errors / skipped from a JUnit XML file, else from pytest's summary line."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    try:
        root = ET.parse(xml_path).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for s in suites:
            tests, fail, err, skip = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
            counts["failed"] += fail
            counts["errors"] += err
            counts["skipped"] += skip
            counts["passed"] += tests - fail - err - skip
        return counts
    except (OSError, ET.ParseError):
        pass
    for number, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", output):
        key = "errors" if word.startswith("error") else word
        counts[key] = int(number)
    return counts


def judge_pytest(ctx: Context, outs: list[Outcome]) -> tuple[bool, dict[str, Any]]:
    counts = pytest_counts(ctx.out / "cuda_tests.xml", outs[-1].output)
    failed = [line.split(" - ")[0] for line in outs[-1].output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    figures: dict[str, Any] = {**counts, "failed_tests": failed[:20]}
    return outs[-1].rc == 0 and counts["passed"] > 0 and not counts["failed"] and not counts["errors"], figures


def copy_run(ctx: Context, name: str) -> Path:
    """Copy the small files of run ``name`` into OUT/runs/name; returns the run directory."""
    src = ctx.work / "runs" / name
    dest = ctx.out / "runs" / name
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for fname in RUN_FILES:
            if (src / fname).is_file():
                shutil.copy2(src / fname, dest / fname)
    return src


MAIN_FIGURES = ("n_samples", "sampler", "valid", "unique", "novel", "unfinished", "eval_seconds", "train_seconds",
                "prepare_seconds", "epochs", "steps", "stopped", "best_val_loss")


def judge_main_job(ctx: Context, outs: list[Outcome]) -> tuple[bool, dict[str, Any]]:
    run = copy_run(ctx, MAIN_RUN)
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False, {}
    figures = {k: v for k, v in metrics.items() if k in MAIN_FIGURES or k.startswith("recon")}
    figures["seconds_total"] = round(outs[-1].seconds, 1)
    return outs[-1].rc == 0 and "valid" in metrics, figures


def judge_torchrun(ctx: Context, outs: list[Outcome]) -> tuple[bool, dict[str, Any]]:
    copy_run(ctx, TORCHRUN_RUN)
    cli = last_json(outs[1].output) if len(outs) > 1 else None
    nccl = last_json(outs[2].output) if len(outs) > 2 else None
    figures = {"cli_rc": outs[0].rc, "cli_run": cli or {}, "ddp": nccl or {}}
    ok = (all(o.rc == 0 for o in outs) and len(outs) == 3 and bool(cli and cli.get("ok"))
          and bool(nccl and nccl.get("ok")))
    return ok, figures


# --- running ------------------------------------------------------------------------------------
def run_command(argv: list[str], timeout: float, log: Any, env: dict[str, str]) -> Outcome:
    """Run ``argv`` in the repository root with a time limit; output goes to ``log`` and back."""
    t0 = time.monotonic()
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(timeout, 1),
                              stdin=subprocess.DEVNULL)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc = None
        output = _text(err.stdout) + _text(err.stderr) + f"\n[killed after {timeout:.0f} s]\n"
    except OSError as err:
        rc, output = 127, f"cannot run {argv[0]}: {err}\n"
    log.write(output if output.endswith("\n") else output + "\n")
    log.write(f"[exit {rc}, {time.monotonic() - t0:.1f} s]\n")
    log.flush()
    return Outcome(rc, output, time.monotonic() - t0)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def run_stage(stage: Stage, ctx: Context, deadline: float, log: Any, env: dict[str, str]) -> StageResult:
    left = deadline - time.monotonic()
    if left < MIN_STAGE_S:
        return StageResult("skipped", budget_s=stage.budget_s, error="no time left in the overall budget")
    stage_end = time.monotonic() + min(stage.budget_s, left)
    log.write(f"\n===== stage {stage.name} (budget {stage.budget_s} s, {left:.0f} s left overall) =====\n")
    t0 = time.monotonic()
    outs: list[Outcome] = []
    for argv in stage.commands:
        outs.append(run_command(argv, stage_end - time.monotonic(), log, env))
        if outs[-1].rc != 0:
            break
    seconds = round(time.monotonic() - t0, 1)
    try:
        ok, figures = stage.judge(ctx, outs)
    except Exception as err:  # noqa: BLE001 - a broken judge must not lose the other stages
        ok, figures = False, {"judge_error": f"{type(err).__name__}: {err}"}
    status = "timeout" if outs[-1].rc is None else "pass" if ok else "fail"
    error = "" if status == "pass" else "\n".join(outs[-1].output.strip().splitlines()[-6:])[-1500:]
    return StageResult(status, seconds, stage.budget_s, figures, error)


def write_summary(path: Path, summary: dict[str, Any]) -> str:
    line = json.dumps(summary, default=str)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(line + "\n")
    tmp.replace(path)
    return line


def run_all(ctx: Context, stages: list[Stage], budget: float) -> dict[str, Any]:
    ctx.out.mkdir(parents=True, exist_ok=True)
    ctx.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    start = time.monotonic()
    deadline = start + budget
    summary: dict[str, Any] = {"check": "gpu_check", "device": ctx.device, "data": ctx.data,
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": round(budget, 1), "stages": {}}
    with open(ctx.out / "gpu_check.log", "a") as log:
        for stage in stages:
            result = run_stage(stage, ctx, deadline, log, env)
            summary["stages"][stage.name] = vars(result)
            summary["seconds"] = round(time.monotonic() - start, 1)
            summary["pass"] = all(s["status"] == "pass" for s in summary["stages"].values())
            write_summary(ctx.out / "gpu_check.json", summary)
            print(f"[gpu_check] {stage.name}: {result.status} ({result.seconds} s)", flush=True)
    return summary


def verify_run(run_dir: Path) -> int:
    """Check a one-epoch run directory: a loadable checkpoint at epoch 1 and one metrics line."""
    sys.path.insert(0, str(REPO))
    from discrete_rae.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    trainer = ckpt["trainer"]
    result = {"epoch": trainer["epoch"], "step": trainer["step"], "metrics_lines": len(lines),
              "samplers": sorted(ckpt.get("samplers", {})), "metrics_json": (run_dir / "metrics.json").is_file()}
    result["ok"] = trainer["epoch"] == 1 and len(lines) == 1 and result["metrics_json"]
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"), help="results folder (default: $OUT)")
    p.add_argument("--data", default=".whl/moses_sample.smi.gz", help="the carried molecules file")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (to try the driver itself)")
    p.add_argument("--budget", type=float, default=450, help="overall seconds for all stages (default 450)")
    p.add_argument("--work", default=None, help="scratch folder for data caches and runs (default: a temp folder)")
    p.add_argument("--stages", default=None, help="comma-separated subset of the stages")
    p.add_argument("--python", default=sys.executable, help="interpreter for the stage commands")
    p.add_argument("--dry-run", action="store_true", help="list the stages and commands; run nothing")
    p.add_argument("--verify-run", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    started = time.monotonic()  # the overall budget counts from here (reading train.py --help included)
    if args.verify_run:
        return verify_run(Path(args.verify_run))
    work = Path(args.work) if args.work else Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_check_work"
    data = Path(args.data) if Path(args.data).is_file() or args.dry_run else REPO / args.data
    ctx = Context(args.python, str(data if args.dry_run else data.resolve()), Path(args.out).resolve(), work,
                  args.device)
    if not args.dry_run:
        ctx.train_flags = train_help_flags(args.python)
    stages = stage_table(ctx)
    if args.stages:
        wanted = args.stages.split(",")
        unknown = sorted(set(wanted) - {s.name for s in stages})
        if unknown:
            p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(s.name for s in stages)}")
        stages = [s for s in stages if s.name in wanted]
    if args.dry_run:
        total = sum(s.budget_s for s in stages)
        print(f"[gpu_check] {len(stages)} stages, budgets {total} s in all (overall cap {args.budget:.0f} s):")
        for s in stages:
            print(f"stage {s.name} (budget {s.budget_s} s): {s.what}")
            for argv in s.commands:
                shown = [a if "\n" not in a else "<snippet>" for a in argv]
                print(f"    {shlex.join(shown)}")
        print("(main_job adds --max-steps 1000 when train.py --help lists it)")
        return 0
    if not data.is_file():
        print(f"error: --data {args.data}: no such file (run scripts/gpu_wheels.sh first)", file=sys.stderr)
        return 2
    summary = run_all(ctx, stages, args.budget - (time.monotonic() - started))
    print(write_summary(ctx.out / "gpu_check.json", summary))
    return 0 if summary.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
