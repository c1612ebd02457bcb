"""The GPU check's scripts, on the CPU: the carry-size guard of gpu_wheels.sh (no download), the
dry run of gpu_check.sh, the stage driver (budgets, statuses, the one JSON line), the data
sample, the run verification and the throughput benchmark."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("env", "cuda_tests", "train_speed", "decode_speed", "main_job", "torchrun")


def _module(relpath: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / relpath)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


gpu_check = _module("scripts/gpu_check.py", "gpu_check")
gpu_data = _module("scripts/gpu_data.py", "gpu_data")


def _bash(*argv: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", *argv], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120)


# --- gpu_wheels.sh ------------------------------------------------------------------------------
def test_wheels_measure_only_refuses_a_set_over_the_limit(tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / "big-1.0-py3-none-any.whl").write_bytes(os.urandom(3 * 2**20))
    (folder / "small.smi.gz").write_bytes(b"x" * 1000)
    size_mib = (3 * 2**20 + 1000) / 2**20

    over = _bash("scripts/gpu_wheels.sh", "--measure-only", "--dir", str(folder), GPU_CARRY_LIMIT_MIB="2")
    assert over.returncode == 1, over.stderr
    assert "over the limit of 2 MiB" in over.stderr
    assert f"{size_mib:.2f} MiB (1 wheels)" in over.stdout  # the folder is measured exactly

    fits = _bash("scripts/gpu_wheels.sh", "--measure-only", "--dir", str(folder), GPU_CARRY_LIMIT_MIB="200")
    assert fits.returncode == 0, fits.stderr
    line = next(s for s in fits.stdout.splitlines() if "to carry" in s)
    repo_mib = float(line.split("repository ")[1].split(" MiB")[0])
    total_mib = float(line.split("= ")[1].split(" MiB")[0])
    assert repo_mib > 0.1 and total_mib == pytest.approx(repo_mib + size_mib, abs=0.011)


def test_wheels_rejects_bad_input_without_downloading(tmp_path):
    missing = _bash("scripts/gpu_wheels.sh", "--measure-only", "--dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_limit = _bash("scripts/gpu_wheels.sh", "--measure-only", GPU_CARRY_LIMIT_MIB="lots")
    assert bad_limit.returncode == 2 and "GPU_CARRY_LIMIT_MIB" in bad_limit.stderr
    # a folder that git does not ignore (here: outside the repository) cannot be carried: refused first
    not_ignored = _bash("scripts/gpu_wheels.sh", "--dir", str(tmp_path / "w"))
    assert not_ignored.returncode == 2 and "git-ignored" in not_ignored.stderr
    assert not (tmp_path / "w").exists()
    unknown = _bash("scripts/gpu_wheels.sh", "--frobnicate")
    assert unknown.returncode == 2 and "unknown argument" in unknown.stderr


def test_wheel_folder_is_git_ignored():
    proc = subprocess.run(["git", "check-ignore", "-q", ".whl/rdkit.whl"], cwd=REPO)
    assert proc.returncode == 0


# --- gpu_check.sh / gpu_check.py ------------------------------------------------------------------
def test_check_dry_run_lists_every_stage_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    proc = _bash("scripts/gpu_check.sh", "--dry-run", str(out), GPU_CHECK_SITE=str(tmp_path / "site"))
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("stage ")]
    assert listed == ["install", *STAGES]
    text = proc.stdout
    assert "--no-index --no-deps --target" in text and "-m pytest -q -m cuda tests/test_cuda.py" in text
    assert "--nproc_per_node=1" in text and "--preset paper" in text and "--preset quick" in text
    assert "timeout 470 s" in text
    assert not out.exists() and not (tmp_path / "site").exists()


def test_stage_budgets_fit_the_eight_minutes():
    ctx = gpu_check.Context("python", "data.smi.gz", Path("out"), Path("work"), "cuda")
    stages = gpu_check.stage_table(ctx)
    assert [s.name for s in stages] == list(STAGES)
    assert sum(s.budget_s for s in stages) + 45 <= 470 <= 8 * 60 - 10  # install 45 s, global limit 470 s
    # only flags that train.py has now, unless --help lists a fixed-step flag
    main_job = next(s for s in stages if s.name == "main_job").commands[0]
    assert "--epochs" in main_job and "--max-steps" not in main_job
    ctx.train_flags = {"--epochs", "--max-steps"}
    main_job = next(s for s in gpu_check.stage_table(ctx) if s.name == "main_job").commands[0]
    assert main_job[main_job.index("--max-steps") + 1] == "1000"


def _stage(name: str, code: str, budget: int = 30):
    return gpu_check.Stage(name, budget, [[sys.executable, "-c", code]], gpu_check.judge_json)


def test_driver_records_pass_fail_timeout_and_skips_past_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_STAGE_S", 0.5)
    ctx = gpu_check.Context(sys.executable, "d", tmp_path / "out", tmp_path / "work", "cpu")
    stages = [_stage("ok", "print('noise'); print('{\"steps_per_s\": 2.5}')"),
              _stage("broken", "import sys; print('{\"x\": 1}'); sys.exit(3)"),
              # its own budget is 30 s, but the overall budget ends first: killed there
              _stage("slow", "import time; time.sleep(60)", budget=30),
              _stage("late", "print('{}')")]
    summary = gpu_check.run_all(ctx, stages, budget=7)
    got = {k: v["status"] for k, v in summary["stages"].items()}
    assert got == {"ok": "pass", "broken": "fail", "slow": "timeout", "late": "skipped"}
    assert summary["stages"]["ok"]["figures"] == {"steps_per_s": 2.5}
    assert summary["pass"] is False
    lines = (tmp_path / "out" / "gpu_check.json").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["stages"]["slow"]["status"] == "timeout"
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "===== stage ok" in log and "noise" in log and "[killed after" in log


def test_pytest_counts_from_junit_xml_and_from_the_summary_line(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="9" failures="1" errors="0" skipped="2">'
                   "</testsuite></testsuites>")
    assert gpu_check.pytest_counts(xml, "") == {"passed": 6, "failed": 1, "errors": 0, "skipped": 2}
    text = "....\n3 failed, 50 passed, 4 skipped, 1 error in 12.3s"
    assert gpu_check.pytest_counts(tmp_path / "none.xml", text) == {"passed": 50, "failed": 3, "errors": 1,
                                                                    "skipped": 4}


def test_verify_run_accepts_a_one_epoch_run(expr_run, capsys):
    assert gpu_check.verify_run(expr_run) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ok"] and result["epoch"] == 1 and result["metrics_lines"] == 1


# --- data sample --------------------------------------------------------------------------------
def test_data_sample_is_seeded_and_drawn_from_the_source(tmp_path):
    source = tmp_path / "train.csv.gz"
    rows = [f"C{'C' * i}O" for i in range(200)]
    with gzip.open(source, "wt") as fh:
        fh.write("SMILES\n" + "\n".join(rows) + "\n")
    first, second, other = tmp_path / "a.smi.gz", tmp_path / "b.smi.gz", tmp_path / "c.smi.gz"
    assert gpu_data.write_sample(source, first, 50, seed=0) == 50
    gpu_data.write_sample(source, second, 50, seed=0)
    gpu_data.write_sample(source, other, 50, seed=1)
    assert first.read_bytes() == second.read_bytes() != other.read_bytes()
    picked = gzip.open(first, "rt").read().split()
    assert len(set(picked)) == 50 and set(picked) <= set(rows)
    assert picked == [r for r in rows if r in set(picked)]  # source order kept
    assert gpu_data.write_sample(source, first, 10_000) == 200  # capped at what there is
    assert gpu_data.main([str(first), "--source", str(tmp_path / "missing.gz")]) == 2
    with pytest.raises(ValueError, match="positive"):
        gpu_data.write_sample(source, first, 0)


# --- throughput benchmark -------------------------------------------------------------------------
def test_gpu_speed_runs_on_the_cpu(tmp_path, capsys):
    speed = _module("benchmarks/gpu_speed.py", "gpu_speed")
    common = ["--domain", "expressions", "--preset", "smoke", "--device", "cpu", "--threads", "1",
              "--data-dir", str(tmp_path / "data"), "-q"]
    assert speed.main(["train", *common, "--steps", "3", "--warmup", "1", "--epoch-size", "1000"]) == 0
    train = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert train["timed_steps"] == 3 and train["losses_finite"] and train["precision"] == "fp32"
    assert train["projected_epoch_s"] == pytest.approx(1000 / train["examples_per_s"], rel=0.01, abs=0.01)
    assert speed.main(["decode", *common, "--n", "20", "--batch", "8", "--logits-n", "16"]) == 0
    decode = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from discrete_rae.pipeline import DECODING_OPTIONS

    assert decode["masks"] == sorted(DECODING_OPTIONS) and decode["codes_n"] == 20
    assert decode["logits_finished"] == 1.0  # the length mask finishes every row


@pytest.mark.slow
def test_ddp_worker_trains_an_epoch_under_torchrun_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           "scripts/gpu_nccl.py", str(tmp_path / "out"), "nci5k", str(tmp_path / "data"),
                           "--device", "cpu", "--threads", "1", "--n-train", "300"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _json_of(proc.stdout)
    assert result["ok"] and result["backend"] == "gloo" and result["ddp"] == "DistributedDataParallel"
    assert (tmp_path / "out" / "run" / "checkpoint.pt").is_file()


def _json_of(text: str) -> dict:
    found = gpu_check.last_json(text)
    assert found is not None, text[-2000:]
    return found


def test_main_job_judge_reads_the_metrics_and_copies_the_small_files(tmp_path):
    ctx = gpu_check.Context(sys.executable, "d", tmp_path / "out", tmp_path / "work", "cuda")
    run = tmp_path / "work" / "runs" / gpu_check.MAIN_RUN
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"valid": 0.5, "unique": 1.0, "recon_accuracy": 0.1,
                                                  "steps": 900, "model": "grammar_rae"}))
    (run / "checkpoint.pt").write_bytes(b"0" * 1000)
    done = gpu_check.Outcome(0, "", 12.34)
    ok, figures = gpu_check.judge_main_job(ctx, [done])
    assert ok and figures == {"valid": 0.5, "unique": 1.0, "recon_accuracy": 0.1, "steps": 900,
                              "seconds_total": 12.3}
    copied = tmp_path / "out" / "runs" / gpu_check.MAIN_RUN
    assert (copied / "metrics.json").is_file() and not (copied / "checkpoint.pt").exists()
    assert gpu_check.judge_main_job(ctx, [gpu_check.Outcome(1, "", 1.0)])[0] is False
    (run / "metrics.json").unlink()
    assert gpu_check.judge_main_job(ctx, [done]) == (False, {})


def _probe_wheel(folder: Path) -> Path:
    """A minimal pure-python wheel (a module and its dist-info) to install offline."""
    import zipfile

    path = folder / "gpucheck_probe-1.0-py3-none-any.whl"
    files = {"gpucheck_probe/__init__.py": "VALUE = 42\n",
             "gpucheck_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: gpucheck-probe\nVersion: 1.0\n",
             "gpucheck_probe-1.0.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                    "Tag: py3-none-any\n")}
    files["gpucheck_probe-1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) + \
        "gpucheck_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


@pytest.mark.slow
def test_check_installs_the_wheels_and_writes_the_json_line(tmp_path):
    """gpu_check.sh end to end on the CPU with one stage: offline install into the site folder,
    the driver under the global timeout, one JSON line and the log."""
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _probe_wheel(wheels)
    with gzip.open(wheels / "moses_sample.smi.gz", "wt") as fh:
        fh.write("CCO\nc1ccccc1\n")
    out, site = tmp_path / "out", tmp_path / "site"
    proc = _bash("scripts/gpu_check.sh", "--device", "cpu", str(out), GPU_WHEELS_DIR=str(wheels),
                 GPU_CHECK_SITE=str(site), GPU_CHECK_STAGES="env", GPU_CHECK_TOTAL_S="110", TMPDIR=str(tmp_path))
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert (site / "gpucheck_probe" / "__init__.py").is_file()
    lines = (out / "gpu_check.json").read_text().splitlines()
    summary = json.loads(lines[0])
    assert len(lines) == 1 and list(summary["stages"]) == ["env"]
    assert summary["stages"]["env"]["status"] in ("pass", "fail", "timeout")
    assert summary["pass"] == (proc.returncode == 0)
    log = (out / "gpu_check.log").read_text()
    assert "installing 1 wheels" in log and "===== stage env" in log
