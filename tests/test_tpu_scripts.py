"""tpu.pod: the exact gcloud commands each subcommand prints with --dry-run, the one-line error for
each mistake, a real run against a stand-in `gcloud` on PATH, and watch's loop through a preemption
(a scripted shell). No network and no Google Cloud CLI needed."""

import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tpu import pod
from tpu.accelerators import GENERATIONS

ROOT = pathlib.Path(__file__).resolve().parents[1]
V5E = ["--name", "rl", "--zone", "us-west4-a"]
PPO = [*V5E, "--experiment", "ppo", "--run-dir", "gs://my-bucket/ppo-lr"]
RUNNING = '[ -f $HOME/jaxrl_si.pid ] && kill -0 "$(cat $HOME/jaxrl_si.pid)" 2>/dev/null'
SETUP = (
    "python3 -m pip install --quiet --user uv && rm -rf $HOME/jaxrl_si_venv && $HOME/.local/bin/uv venv --quiet --python 3.11 $HOME/jaxrl_si_venv"
    ' && cd $HOME/jaxrl_si && $HOME/.local/bin/uv pip install --quiet --python $HOME/jaxrl_si_venv/bin/python -e ".[tpu,envs]"'
)


def dry_run(capsys, command, *argv):
    """The lines `python -m tpu.pod COMMAND --dry-run ARGV` prints (exit status 0, nothing on stderr)."""
    assert pod.main([command, "--dry-run", *argv]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


def ssh(script, worker="all"):
    return shlex.join(["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rl", "--zone=us-west4-a", f"--worker={worker}", f"--command={script}"])


# --- dry runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("spot", [False, True])
def test_create_queues_the_slice_and_spot_adds_its_flag(capsys, spot):
    lines = dry_run(capsys, "create", *V5E, "--accelerator-type", "v5litepod-16", *(["--spot"] if spot else []))
    expected = (
        "gcloud compute tpus queued-resources create rl --node-id=rl"
        " --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --zone=us-west4-a"
    )
    assert lines == [expected + (" --spot" if spot else "")]


@pytest.mark.parametrize(
    "accelerator, zone, runtime",
    [("v4-32", "us-central2-b", "tpu-ubuntu2204-base"), ("v5litepod-8", "us-west4-a", "v2-alpha-tpuv5-lite"),
     ("v5p-16", "us-east5-a", "v2-alpha-tpuv5"), ("v6e-8", "us-east1-d", "v2-alpha-tpuv6e")],
)  # fmt: skip
def test_each_generation_gets_its_runtime_version(capsys, accelerator, zone, runtime):
    (line,) = dry_run(capsys, "create", "--name", "rl", "--zone", zone, "--accelerator-type", accelerator)
    assert f"--accelerator-type={accelerator} --runtime-version={runtime} --zone={zone}" in line


def test_create_takes_a_project_and_another_runtime_version(capsys):
    (line,) = dry_run(capsys, "create", *V5E, "--project", "my-proj", "--accelerator-type", "v5litepod-8", "--runtime-version", "v2-alpha-tpuv5-lite-next")
    assert line.endswith("--runtime-version=v2-alpha-tpuv5-lite-next --zone=us-west4-a --project=my-proj")


def test_install_ships_this_checkout_to_every_worker(capsys):
    assert dry_run(capsys, "install", *V5E) == [
        f"git -C {shlex.quote(str(ROOT))} archive --format=tar.gz --output=/tmp/jaxrl_si-rl.tar.gz HEAD",
        "gcloud compute tpus tpu-vm scp /tmp/jaxrl_si-rl.tar.gz rl:jaxrl_si.tar.gz --zone=us-west4-a --worker=all",
        ssh(
            f'if {RUNNING}; then echo "$(hostname): a run is going, not reinstalling"; else rm -rf $HOME/jaxrl_si && mkdir -p $HOME/jaxrl_si'
            f" && tar -xzf $HOME/jaxrl_si.tar.gz -C $HOME/jaxrl_si && {SETUP}; fi"
        ),
    ]


def test_install_can_clone_a_repository_at_a_ref(capsys):
    assert dry_run(capsys, "install", *V5E, "--repo", "https://example.org/jaxrl_si.git", "--ref", "v0.1") == [
        ssh(
            f'if {RUNNING}; then echo "$(hostname): a run is going, not reinstalling"; else rm -rf $HOME/jaxrl_si'
            " && git clone --quiet https://example.org/jaxrl_si.git $HOME/jaxrl_si && git -C $HOME/jaxrl_si checkout --quiet v0.1"
            f" && {SETUP}; fi"
        )
    ]


def test_launch_runs_the_experiment_distributed_on_every_worker_and_resumes(capsys):
    lines = dry_run(capsys, "launch", *PPO, "--", "--seeds", "8", "--sweep", "learning_rate=1e-4,3e-4 clip_eps=0.1,0.2")
    assert lines == [
        "gcloud storage buckets describe gs://my-bucket '--format=value(name)'",
        ssh(
            f'cd $HOME/jaxrl_si && if {RUNNING}; then echo "$(hostname): a run is going, not launching another"; else nohup'
            " $HOME/jaxrl_si_venv/bin/python -m experiments.ppo --seeds 8 --sweep 'learning_rate=1e-4,3e-4 clip_eps=0.1,0.2'"
            " --distributed --run-dir gs://my-bucket/ppo-lr --resume >> $HOME/jaxrl_si.log 2>&1 < /dev/null & echo $! > $HOME/jaxrl_si.pid; fi"
        ),
    ]
    argv = shlex.split(lines[1])
    assert "--worker=all" in argv
    script = argv[-1].removeprefix("--command=")
    experiment = shlex.split(script.split("nohup ")[1].split(" >>")[0])  # what each worker runs
    assert experiment[3:] == [
        "--seeds", "8", "--sweep", "learning_rate=1e-4,3e-4 clip_eps=0.1,0.2", "--distributed", "--run-dir", "gs://my-bucket/ppo-lr", "--resume"
    ]  # fmt: skip


@pytest.mark.parametrize("worker", ["0", "all", "3"])
def test_logs_follow_one_worker_or_all(capsys, worker):
    assert dry_run(capsys, "logs", *V5E, "--worker", worker) == [ssh('tail -n 200 -F $HOME/jaxrl_si.log | sed -u "s/^/[$(hostname)] /"', worker)]


def test_delete_removes_the_queued_resource_and_its_node(capsys):
    assert dry_run(capsys, "delete", *V5E) == ["gcloud compute tpus queued-resources delete rl --zone=us-west4-a --force --quiet"]


def test_watch_plan_is_the_other_subcommands_commands(capsys):
    """`watch --dry-run`: one round of the loop, each command the same as its own subcommand's."""
    slice_ = [*V5E, "--accelerator-type", "v5litepod-16", "--spot"]
    lines = dry_run(capsys, "watch", *slice_, *PPO[4:], "--", "--seeds", "8")
    commands = [line for line in lines if not line.startswith("#")]
    create = dry_run(capsys, "create", *slice_)
    install = dry_run(capsys, "install", *V5E)
    launch = dry_run(capsys, "launch", *PPO, "--", "--seeds", "8")
    delete = dry_run(capsys, "delete", *V5E)
    assert commands == [
        launch[0],
        "gcloud storage ls gs://my-bucket/ppo-lr/summary.json",
        "gcloud compute tpus queued-resources describe rl --zone=us-west4-a '--format=value(state.state)'",
        *delete, *create, *install, launch[1],
        ssh(f"if {RUNNING}; then echo running; else echo stopped; fi", worker="0"),
        *delete,
    ]  # fmt: skip
    assert lines[0] == "# watch rl: poll every 60 s until gs://my-bucket/ppo-lr/summary.json exists"
    assert "# when the state is FAILED, SUSPENDING, SUSPENDED (preempted):" in lines
    kept = dry_run(capsys, "watch", *slice_, *PPO[4:], "--keep")
    assert kept[-1] == "# when the last output exists: keep the slice (--keep)"


# --- mistakes -------------------------------------------------------------------------------

KNOWN = "known: v4-<8k> (v4), v5litepod-<1|4|8|16|32|64|128|256> (v5e), v5p-<8k> (v5p), v6e-<1|4|8|16|32|64|128|256> (v6e)"
RUN = [*V5E, "--experiment", "ppo", "--run-dir"]
NOT_GS = "--run-dir must be gs://BUCKET/PATH, a Cloud Storage directory every worker can reach; got"
MISTAKES = [
    (["create", *V5E, "--accelerator-type", "v9-8"], f"unknown accelerator type 'v9-8'; {KNOWN}"),
    (["create", *V5E, "--accelerator-type", "v5e-8"], f"unknown accelerator type 'v5e-8' (gcloud spells v5e as v5litepod); {KNOWN}"),
    (["create", *V5E, "--accelerator-type", "v5litepod-3"], f"unknown accelerator type 'v5litepod-3'; {KNOWN}"),
    (["create", *V5E, "--accelerator-type", "v4-12"], f"unknown accelerator type 'v4-12'; {KNOWN}"),
    (
        ["create", *V5E, "--accelerator-type", "v4-8"],
        "v4 TPUs are not listed in zone 'us-west4-a'; listed: us-central2-b (--unlisted-zone to try anyway)",
    ),
    (["create", "--name", "rl", "--zone", "uswest4", "--accelerator-type", "v4-8"], "--zone 'uswest4' is not a zone name like us-west4-a"),
    (["delete", "--name", "rl", "--zone", "US-WEST4-A"], "--zone 'US-WEST4-A' is not a zone name like us-west4-a"),
    (["create", *V5E], "the following arguments are required: --accelerator-type"),
    (["delete", "--name", "rl"], "the following arguments are required: --zone"),
    (["delete", "--name", "RL", "--zone", "us-west4-a"], "--name 'RL' must be lower-case letters, digits and hyphens, starting with a letter"),
    (["launch", *V5E, "--experiment", "ppo"], "the following arguments are required: --run-dir"),
    (["launch", *RUN, "runs/ppo"], f"{NOT_GS} 'runs/ppo'"),
    (["launch", *RUN, "gs://my-bucket"], f"{NOT_GS} 'gs://my-bucket'"),
    (["launch", *RUN, "gs://My_Bucket/x"], "'My_Bucket' is not a bucket name (3 to 63 lower-case letters, digits, '-', '_', '.')"),
    (
        ["launch", *V5E, "--experiment", "preference_bandits", "--run-dir", "gs://b-1/x"],
        "unknown experiment 'preference_bandits'; known: ppo, spo, cpl, spr, hilp, self_improve (preference_bandits has no --run-dir or --resume)",
    ),
    (
        ["launch", *PPO, "--", "--resume", "--run-dir=gs://other/x"],
        "tpu.pod sets --resume, --run-dir=gs://other/x itself: give --run-dir before --, and leave out the rest",
    ),
    (["launch", *PPO, "--", "--seeds", "8", "--dry-run"], "--dry-run goes before --: after it, arguments are the experiment's"),
    (["delete", *V5E, "--", "--seeds", "8"], "only launch and watch pass arguments after -- to the experiment; got --seeds 8"),
    (["logs", *V5E, "--worker", "first"], "--worker must be a worker index or all, got 'first'"),
    ([], "the following arguments are required: command"),
]


@pytest.mark.parametrize("argv, message", MISTAKES)
def test_a_mistake_is_one_line_and_exit_status_2(capsys, argv, message):
    assert pod.main(argv[:1] + ["--dry-run"] + argv[1:]) == 2  # a dry run, should one slip through
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: {message}\n"


def test_an_unknown_subcommand_is_one_line(capsys):
    assert pod.main(["reboot", *V5E]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument command: invalid choice: 'reboot'") and err.count("\n") == 1  # argparse's words vary by version


def test_an_unlisted_zone_can_be_allowed(capsys):
    (line,) = dry_run(capsys, "create", *V5E, "--accelerator-type", "v4-8", "--unlisted-zone")
    assert "--accelerator-type=v4-8 --runtime-version=tpu-ubuntu2204-base --zone=us-west4-a" in line


# --- real runs, against a stand-in gcloud ---------------------------------------------------


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    """A `gcloud` first on PATH that records each call (one shlex-joined line) and fails the
    calls whose line contains `$FAIL`. Returns the record file."""
    record = tmp_path / "calls.txt"
    script = tmp_path / "bin" / "gcloud"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\nimport os, shlex, sys\nline = shlex.join(['gcloud', *sys.argv[1:]])\n"
        f"open({str(record)!r}, 'a').write(line + '\\n')\nsys.exit(1 if os.environ.get('FAIL') and os.environ['FAIL'] in line else 0)\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return record


def test_a_real_launch_runs_what_the_dry_run_prints(capsys, fake_gcloud):
    expected = dry_run(capsys, "launch", *PPO, "--", "--seeds", "8")
    assert pod.main(["launch", *PPO, "--", "--seeds", "8"]) == 0
    assert fake_gcloud.read_text().splitlines() == expected


def test_a_missing_bucket_stops_launch_before_any_worker_is_touched(capsys, fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAIL", "storage buckets describe")
    assert pod.main(["launch", *PPO]) == 2
    assert capsys.readouterr().err == (
        "error: bucket gs://my-bucket does not exist or you cannot read it;"
        " make it first: gcloud storage buckets create gs://my-bucket --location=REGION\n"
    )
    assert fake_gcloud.read_text().splitlines() == ["gcloud storage buckets describe gs://my-bucket '--format=value(name)'"]


def test_a_failing_command_is_one_line_and_exit_status_1(capsys, fake_gcloud, monkeypatch):
    monkeypatch.setenv("FAIL", "queued-resources delete")
    assert pod.main(["delete", *V5E]) == 1
    assert capsys.readouterr().err == "error: this failed: gcloud compute tpus queued-resources delete rl --zone=us-west4-a --force --quiet\n"


def test_the_module_runs_as_a_script():
    done = subprocess.run([sys.executable, "-m", "tpu.pod", "delete", "--dry-run", *V5E], check=False, cwd=ROOT, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "gcloud compute tpus queued-resources delete rl --zone=us-west4-a --force --quiet\n")


def on_worker(script, home):
    """Run a `--command=` script as the worker's shell would, with `home` as $HOME."""
    return subprocess.run(["bash", "-c", script], check=False, env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, timeout=30)


def test_the_worker_scripts_start_one_background_run_and_report_it(tmp_path):
    """launch's and watch's scripts in a real shell: a stand-in Python that records its arguments."""
    args = pod.parse(["launch", *PPO, "--", "--seeds", "8"])
    launch_script = pod.launch_command(args)[-1].removeprefix("--command=")
    status_script = pod.status_command(args)[-1].removeprefix("--command=")
    python = tmp_path / "jaxrl_si_venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\necho "$@" > "$HOME/argv.txt"\nexec sleep 60\n')
    python.chmod(0o755)
    (tmp_path / "jaxrl_si").mkdir()
    assert on_worker(status_script, tmp_path).stdout == "stopped\n"  # never launched
    assert on_worker(launch_script, tmp_path).returncode == 0
    pid = int((tmp_path / "jaxrl_si.pid").read_text())
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "argv.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "argv.txt").read_text() == "-m experiments.ppo --seeds 8 --distributed --run-dir gs://my-bucket/ppo-lr --resume\n"
        assert on_worker(status_script, tmp_path).stdout == "running\n"
        again = on_worker(launch_script, tmp_path)
        assert again.stdout.endswith(": a run is going, not launching another\n")
        assert int((tmp_path / "jaxrl_si.pid").read_text()) == pid
    finally:
        os.kill(pid, signal.SIGTERM)
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid is no process's now, as after a crash (the sleeper may linger as a zombie)
    (tmp_path / "jaxrl_si.pid").write_text(f"{gone.pid}\n")
    assert on_worker(status_script, tmp_path).stdout == "stopped\n"


# --- watch's loop ---------------------------------------------------------------------------


class ScriptedShell(pod.Shell):
    """Answers watch's queries and records every command: the queued resource's state at each
    poll from `states` (None: there is none; the last one repeats), the experiment's last output
    in the bucket from poll `done_at` on, and `worker_status` for the run on worker 0."""

    def __init__(self, states, done_at, worker_status="running"):
        super().__init__(dry_run=False)
        self.states, self.done_at, self.worker_status = states, done_at, worker_status
        self.calls, self.describes = [], 0

    def attempt(self, cmd):
        self.calls.append(cmd)
        return True

    def capture(self, cmd):
        self.calls.append(cmd)
        if cmd[1:3] == ["storage", "ls"]:
            return self._done(0 if self.describes >= self.done_at - 1 else 1)
        if cmd[1:5] == ["compute", "tpus", "queued-resources", "describe"]:
            state = self.states[min(self.describes, len(self.states) - 1)]
            self.describes += 1
            if state in (None, "UNREACHABLE"):
                return self._done(1, stderr="ERROR: NOT_FOUND: no such resource" if state is None else "ERROR: connection reset")
            return self._done(0, state + "\n")
        if "--worker=0" in cmd:
            return self._done(0, self.worker_status + "\n")
        return self._done(0)  # the bucket exists

    @staticmethod
    def _done(returncode, stdout="", stderr=""):
        return subprocess.CompletedProcess([], returncode, stdout, stderr)


def watch_args(*extra):
    return pod.parse(["watch", *V5E, "--accelerator-type", "v5litepod-16", "--spot", *PPO[4:], "--repo", "https://example.org/r.git", *extra])


def test_watch_recreates_a_preempted_slice_relaunches_and_deletes_it_when_done():
    args = watch_args()
    shell = ScriptedShell(["SUSPENDED", "WAITING_FOR_RESOURCES", "ACTIVE", "ACTIVE"], done_at=5)
    sleeps = []
    pod.watch(args, shell, sleep=sleeps.append)
    marker, describe, delete = pod.marker_command(args), pod.describe_command(args), pod.delete_command(args)
    (install,) = pod.install_commands(args)
    assert shell.calls == [
        pod.bucket_command(args),
        marker, describe, delete, pod.create_command(args),  # preempted: a new slice
        marker, describe,  # queued
        marker, describe, install, pod.launch_command(args),  # up: install, launch (the run resumes)
        marker, describe, pod.status_command(args),  # still running
        marker, describe, delete,  # complete: teardown
    ]  # fmt: skip
    assert sleeps == [60] * 4


def test_watch_creates_a_missing_slice_and_keeps_it_with_keep():
    args = watch_args("--keep", "--poll-seconds", "5")
    shell = ScriptedShell([None, "ACTIVE"], done_at=3)
    sleeps = []
    pod.watch(args, shell, sleep=sleeps.append)
    assert pod.create_command(args) in shell.calls and pod.launch_command(args) in shell.calls
    assert pod.delete_command(args) not in shell.calls
    assert sleeps == [5, 5]


def test_watch_waits_out_a_state_gcloud_cannot_read(capsys):
    args = watch_args()
    shell = ScriptedShell(["UNREACHABLE", "ACTIVE"], done_at=3)
    pod.watch(args, shell, sleep=lambda seconds: None)
    assert pod.create_command(args) not in shell.calls and pod.delete_command(args) == shell.calls[-1]
    assert "ERROR: connection reset\n" in capsys.readouterr().err


def test_watch_stops_with_an_error_when_the_run_dies_and_keeps_the_slice():
    args = watch_args()
    shell = ScriptedShell(["ACTIVE"], done_at=10**9, worker_status="stopped")
    with pytest.raises(pod.CommandError, match="the run on rl stopped before writing gs://my-bucket/ppo-lr/summary.json"):
        pod.watch(args, shell, sleep=lambda seconds: None)
    assert pod.delete_command(args) not in shell.calls


# --- what the scripts rely on ---------------------------------------------------------------


@pytest.mark.parametrize("experiment, marker", pod.EXPERIMENTS.items())
def test_each_completion_marker_is_written_by_its_experiment(experiment, marker):
    sources = ROOT / "experiments" / experiment
    text = "".join(p.read_text() for p in sources.glob("*.py")) if sources.is_dir() else (ROOT / "experiments" / f"{experiment}.py").read_text()
    assert f'"{marker}"' in text


def test_every_generation_defaults_its_zones_and_runtime():
    assert set(GENERATIONS) == {"v4", "v5litepod", "v5p", "v6e"}
    assert all(g.zones and g.runtime_version for g in GENERATIONS.values())


def test_the_slurm_example_uses_the_same_entry_point_one_task_per_gpu():
    text = (ROOT / "tpu" / "slurm_example.sbatch").read_text()
    directives = dict(line.removeprefix("#SBATCH --").partition("=")[::2] for line in text.splitlines() if line.startswith("#SBATCH --"))
    assert directives["ntasks-per-node"] == directives["gpus-per-node"]  # JAX gives each SLURM task the GPU at its local id
    command = " ".join(text.split("srun ", 1)[1].replace("\\\n", " ").split())
    assert command.startswith("python -m experiments.ppo ")
    assert command.endswith('--distributed --run-dir "$RUN_DIR" --resume')
