"""Run an experiment on a Cloud TPU VM or pod slice: create, install, launch, logs, watch, delete.

    python -m tpu.pod create  --name rl --zone us-west4-a --accelerator-type v5litepod-16 --spot
    python -m tpu.pod install --name rl --zone us-west4-a          # this checkout's HEAD, on every worker
    python -m tpu.pod launch  --name rl --zone us-west4-a --experiment ppo --run-dir gs://BUCKET/ppo -- --seeds 8
    python -m tpu.pod logs    --name rl --zone us-west4-a [--worker all]
    python -m tpu.pod watch   --name rl --zone us-west4-a --accelerator-type v5litepod-16 --spot \\
                              --experiment ppo --run-dir gs://BUCKET/ppo -- --seeds 8
    python -m tpu.pod delete  --name rl --zone us-west4-a

`--name` names the queued resource and its TPU node. Arguments after `--` go to the experiment;
`launch` adds `--distributed --run-dir gs://... --resume`, so the same command on every worker
starts a fresh run or continues the latest complete checkpoint in the bucket. `watch` keeps a run
going through preemptions: it polls the queued resource, re-creates it when preempted, installs
and launches again, and deletes it once the experiment's last output (`EXPERIMENTS`) is in the
bucket.

Every subcommand takes `--dry-run`: it prints the commands it would run, one a line
(`shlex.join`), and runs nothing (`watch` prints one round of its loop under `#` comments). A
mistake in the flags is one line `error: ...` and exit status 2; a failed command, one line and 1.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys
import time

from tpu.accelerators import UsageError, check_zone, generation

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the checkout `install` ships
CHECKOUT = "$HOME/jaxrl_si"  # on every worker
VENV = "$HOME/jaxrl_si_venv"
LOG = "$HOME/jaxrl_si.log"
PID = "$HOME/jaxrl_si.pid"
PYTHON = "3.11"  # the project's; the TPU images' own Python may be older, so uv brings this one
RUNNING = f'[ -f {PID} ] && kill -0 "$(cat {PID})" 2>/dev/null'  # shell test: is a launched run alive here?
PREEMPTED = ("FAILED", "SUSPENDING", "SUSPENDED")  # queued-resource states that need a new slice

# entry point -> the file it writes last in its run directory (`watch` stops once it exists);
# preference_bandits has no --run-dir or --resume and runs in seconds on one machine.
EXPERIMENTS = {
    "ppo": "summary.json",  # experiments/ppo.py main()
    "spo": "results.md",  # experiments/spo/analysis.py write()
    "cpl": "returns.png",  # experiments/cpl/experiment.py _plot(), after results.json / results.md
    "spr": "final.png",  # experiments/spr/experiment.py, after results.json / results.md
    "hilp": "curves.png",  # experiments/hilp/experiment.py _write(), after results.json / results.md
    "self_improve": "self_improve_logps.png",  # experiments/self_improve/experiment.py plot()
}
OWN_FLAGS = ("--run-dir", "--resume", "--distributed", "--coordinator-address", "--num-processes", "--process-id")


class CommandError(RuntimeError):
    """A command or a run that failed: printed as one line `error: ...`, exit status 1."""


class Shell:
    """Runs commands; with `dry_run`, prints each one (`shlex.join`, one a line) and runs nothing."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def run(self, cmd: list[str]) -> None:
        """Run `cmd`, its output shown; `CommandError` if it fails."""
        if not self.attempt(cmd):
            raise CommandError(f"this failed: {shlex.join(cmd)}")

    def attempt(self, cmd: list[str]) -> bool:
        """Run `cmd`, its output shown; whether it succeeded (True in a dry run)."""
        if self.dry_run:
            print(shlex.join(cmd))
            return True
        try:
            return subprocess.run(cmd, check=False).returncode == 0
        except FileNotFoundError:
            raise CommandError(f"{cmd[0]} is not installed (the Google Cloud CLI: https://cloud.google.com/sdk/docs/install)") from None

    def capture(self, cmd: list[str]) -> subprocess.CompletedProcess:
        """Run `cmd` and keep its output (a dry run prints it and returns an empty success)."""
        if self.dry_run:
            print(shlex.join(cmd))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        try:
            return subprocess.run(cmd, check=False, capture_output=True, text=True)
        except FileNotFoundError:
            raise CommandError(f"{cmd[0]} is not installed (the Google Cloud CLI: https://cloud.google.com/sdk/docs/install)") from None


# --- the commands ---------------------------------------------------------------------------


def _location(args) -> list[str]:
    return [f"--zone={args.zone}", *([f"--project={args.project}"] if args.project else [])]


def create_command(args) -> list[str]:
    """Queue a request for the slice; `--spot` makes it preemptible and cheaper."""
    runtime = args.runtime_version or generation(args.accelerator_type).runtime_version
    cmd = ["gcloud", "compute", "tpus", "queued-resources", "create", args.name, f"--node-id={args.name}"]
    cmd += [f"--accelerator-type={args.accelerator_type}", f"--runtime-version={runtime}", *_location(args)]
    return cmd + (["--spot"] if args.spot else [])


def describe_command(args) -> list[str]:
    """Print the queued resource's state (ACTIVE, WAITING_FOR_RESOURCES, SUSPENDED, ...)."""
    return ["gcloud", "compute", "tpus", "queued-resources", "describe", args.name, *_location(args), "--format=value(state.state)"]


def delete_command(args) -> list[str]:
    """Delete the queued resource and its TPU node (`--force`), without a prompt (`--quiet`)."""
    return ["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *_location(args), "--force", "--quiet"]


def ssh_command(args, script: str, worker: str = "all") -> list[str]:
    """Run the shell `script` on `worker` (default: every worker of the slice, concurrently)."""
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *_location(args), f"--worker={worker}", f"--command={script}"]


def bucket_command(args) -> list[str]:
    """Fail unless the run directory's bucket exists and can be read."""
    return ["gcloud", "storage", "buckets", "describe", bucket_of(args.run_dir), "--format=value(name)"]


def marker_command(args) -> list[str]:
    """Fail unless the experiment's last output is in the run directory."""
    return ["gcloud", "storage", "ls", f"{args.run_dir.rstrip('/')}/{EXPERIMENTS[args.experiment]}"]


def _unless_running(script: str, skipped: str) -> str:
    """`script`, unless a launched run is alive on this worker (then one line saying so)."""
    return f'if {RUNNING}; then echo "$(hostname): a run is going, {skipped}"; else {script}; fi'


def install_commands(args) -> list[list[str]]:
    """Put the code at `--ref` on every worker (clone `--repo`, or ship this checkout's `git
    archive`) and install it with the `tpu` and `envs` extras into a Python 3.11 venv made by uv."""
    uv = "$HOME/.local/bin/uv"
    setup = (
        f"python3 -m pip install --quiet --user uv && rm -rf {VENV} && {uv} venv --quiet --python {PYTHON} {VENV} "
        f"&& cd {CHECKOUT} && {uv} pip install --quiet --python {VENV}/bin/python -e \".[tpu,envs]\""
    )
    if args.repo:
        fetch = f"rm -rf {CHECKOUT} && git clone --quiet {shlex.quote(args.repo)} {CHECKOUT} && git -C {CHECKOUT} checkout --quiet {shlex.quote(args.ref)}"
        return [ssh_command(args, _unless_running(f"{fetch} && {setup}", "not reinstalling"))]
    archive = f"/tmp/jaxrl_si-{args.name}.tar.gz"
    unpack = f"rm -rf {CHECKOUT} && mkdir -p {CHECKOUT} && tar -xzf $HOME/jaxrl_si.tar.gz -C {CHECKOUT}"
    return [
        ["git", "-C", str(ROOT), "archive", "--format=tar.gz", f"--output={archive}", args.ref],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.name}:jaxrl_si.tar.gz", *_location(args), "--worker=all"],
        ssh_command(args, _unless_running(f"{unpack} && {setup}", "not reinstalling")),
    ]


def launch_command(args) -> list[str]:
    """Start the experiment in the background on every worker, one log file each; a no-op on a
    worker where the run is already going."""
    flags = shlex.join([*args.extra, "--distributed", "--run-dir", args.run_dir, "--resume"])
    start = f"nohup {VENV}/bin/python -m experiments.{args.experiment} {flags} >> {LOG} 2>&1 < /dev/null & echo $! > {PID}"
    return ssh_command(args, f"cd {CHECKOUT} && " + _unless_running(start, "not launching another"))


def logs_command(args) -> list[str]:
    """Follow the run's log on `--worker`, each line prefixed with the worker's host name."""
    return ssh_command(args, f'tail -n 200 -F {LOG} | sed -u "s/^/[$(hostname)] /"', worker=args.worker)


def status_command(args) -> list[str]:
    """Print `running` or `stopped`: is the launched run alive on worker 0?"""
    return ssh_command(args, f"if {RUNNING}; then echo running; else echo stopped; fi", worker="0")


def bucket_of(run_dir: str) -> str:
    """`gs://BUCKET` of `gs://BUCKET/PATH`; `UsageError` for anything else."""
    bucket, _, path = run_dir.removeprefix("gs://").partition("/")
    if not run_dir.startswith("gs://") or not path.strip("/"):
        raise UsageError(f"--run-dir must be gs://BUCKET/PATH, a Cloud Storage directory every worker can reach; got {run_dir!r}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", bucket):
        raise UsageError(f"{bucket!r} is not a bucket name (3 to 63 lower-case letters, digits, '-', '_', '.')")
    return f"gs://{bucket}"


# --- the subcommands ------------------------------------------------------------------------


def create(args, shell: Shell) -> None:
    """Queue the request for the slice."""
    shell.run(create_command(args))


def install(args, shell: Shell) -> None:
    """Install the project on every worker."""
    for cmd in install_commands(args):
        shell.run(cmd)


def launch(args, shell: Shell) -> None:
    """Check the bucket, then start the experiment on every worker."""
    check_bucket(args, shell)
    shell.run(launch_command(args))


def logs(args, shell: Shell) -> None:
    """Follow the run's log."""
    shell.run(logs_command(args))


def delete(args, shell: Shell) -> None:
    """Delete the queued resource and its TPU."""
    shell.run(delete_command(args))


def check_bucket(args, shell: Shell) -> None:
    """`UsageError` unless the run directory's bucket exists (checked with gcloud; printed in a dry run)."""
    if shell.capture(bucket_command(args)).returncode != 0:
        bucket = bucket_of(args.run_dir)
        raise UsageError(f"bucket {bucket} does not exist or you cannot read it; make it first: gcloud storage buckets create {bucket} --location=REGION")


def watch(args, shell: Shell, sleep=time.sleep) -> None:
    """Poll until the experiment's last output is in the bucket, re-creating the slice when it
    is preempted and launching again (the run resumes from the latest checkpoint); then delete it."""
    if shell.dry_run:
        return print_watch_plan(args)
    check_bucket(args, shell)
    launched = False  # installed and launched on the current slice
    while shell.capture(marker_command(args)).returncode != 0:
        state = queued_state(args, shell)
        print(f"{time.strftime('%H:%M:%S')} {args.name}: {state or 'no queued resource'}", flush=True)
        if state in PREEMPTED:
            shell.run(delete_command(args))
            state = None
        if state is None:
            shell.run(create_command(args))
            launched = False
        elif state == "ACTIVE" and not launched:
            launched = all(shell.attempt(cmd) for cmd in [*install_commands(args), launch_command(args)])
        elif state == "ACTIVE" and run_stopped(args, shell):
            raise CommandError(
                f"the run on {args.name} stopped before writing {marker_command(args)[-1]}: read its log "
                f"(python -m tpu.pod logs --name {args.name} --zone {args.zone}); the slice is kept and bills until deleted"
            )
        sleep(args.poll_seconds)
    print(f"{args.name}: the run is complete ({marker_command(args)[-1]} exists)", flush=True)
    if not args.keep and queued_state(args, shell) is not None:
        shell.run(delete_command(args))


def queued_state(args, shell: Shell) -> str | None:
    """The queued resource's state; None if there is none; UNKNOWN if gcloud cannot tell (e.g. a
    network error: `watch` waits for the next poll), with gcloud's message on stderr."""
    done = shell.capture(describe_command(args))
    if done.returncode == 0:
        return done.stdout.strip()
    if "NOT_FOUND" in done.stderr:
        return None
    print(" ".join(done.stderr.split()), file=sys.stderr, flush=True)
    return "UNKNOWN"


def run_stopped(args, shell: Shell) -> bool:
    """Whether the launched process has exited on worker 0 without writing the last output (an
    ssh failure, e.g. during a preemption, counts as not stopped: the next poll sees the state)."""
    done = shell.capture(status_command(args))
    return done.returncode == 0 and done.stdout.strip() == "stopped" and shell.capture(marker_command(args)).returncode != 0


def print_watch_plan(args) -> None:
    """`watch --dry-run`: the commands of one round of the loop, under comments saying when."""
    join = shlex.join
    lines = [
        f"# watch {args.name}: poll every {args.poll_seconds} s until {marker_command(args)[-1]} exists",
        join(bucket_command(args)),
        "# each poll:",
        join(marker_command(args)),
        join(describe_command(args)),
        f"# when the state is {', '.join(PREEMPTED)} (preempted):",
        join(delete_command(args)),
        "# when there is no queued resource (or it was just deleted):",
        join(create_command(args)),
        "# when ACTIVE, once per slice (the run resumes from the latest checkpoint in the bucket):",
        *map(join, install_commands(args)),
        join(launch_command(args)),
        "# when ACTIVE and launched: is the run still going on worker 0?",
        join(status_command(args)),
        "# when the last output exists:" + (" keep the slice (--keep)" if args.keep else ""),
        *([] if args.keep else [join(delete_command(args))]),
    ]
    print("\n".join(lines))


SUBCOMMANDS = {"create": create, "install": install, "launch": launch, "logs": logs, "watch": watch, "delete": delete}


# --- the command line -----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are `UsageError`s (one line, exit status 2), not usage dumps."""

    def error(self, message):
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The command line: one subparser per subcommand, sharing flag groups."""
    common = _Parser(add_help=False)
    common.add_argument("--name", required=True, help="queued resource and TPU node name")
    common.add_argument("--zone", required=True, help="e.g. us-west4-a")
    common.add_argument("--project", help="default: gcloud's configured project")
    common.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    slice_ = _Parser(add_help=False)
    slice_.add_argument("--accelerator-type", required=True, help="e.g. v5litepod-8, v4-32, v5p-16, v6e-8")
    slice_.add_argument("--runtime-version", help="default: the generation's JAX image (tpu/accelerators.py)")
    slice_.add_argument("--spot", action="store_true", help="Spot VMs: cheaper, preemptible")
    slice_.add_argument("--unlisted-zone", action="store_true", help="allow a zone tpu/accelerators.py does not list")
    code = _Parser(add_help=False)
    code.add_argument("--repo", help="git URL the workers clone; default: ship this checkout (git archive)")
    code.add_argument("--ref", default="HEAD", help="git ref to install (default HEAD; uncommitted changes stay here)")
    run = _Parser(add_help=False)
    run.add_argument("--experiment", required=True, help=f"one of {', '.join(EXPERIMENTS)}")
    run.add_argument("--run-dir", required=True, help="gs://BUCKET/PATH, shared by the workers")

    top = _Parser(prog="python -m tpu.pod", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("create", parents=[common, slice_], help="queue a request for a TPU VM or pod slice")
    sub.add_parser("install", parents=[common, code], help="install the project on every worker")
    sub.add_parser("launch", parents=[common, run], help="start the experiment on every worker")
    sub.add_parser("logs", parents=[common], help="follow the run's log").add_argument("--worker", default="0", help="a worker index, or all")
    watch_ = sub.add_parser("watch", parents=[common, slice_, code, run], help="keep the run going through preemptions")
    watch_.add_argument("--poll-seconds", type=int, default=60)
    watch_.add_argument("--keep", action="store_true", help="keep the slice once the run is complete")
    sub.add_parser("delete", parents=[common], help="delete the queued resource and its TPU")
    return top


def parse(argv: list[str]) -> argparse.Namespace:
    """The validated arguments; `UsageError` for any mistake. After `--`: the experiment's own flags."""
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser().parse_args(argv[:cut])
    args.extra = argv[cut + 1 :]
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", args.name):
        raise UsageError(f"--name {args.name!r} must be lower-case letters, digits and hyphens, starting with a letter")
    check_zone(args.zone, generation(args.accelerator_type) if "accelerator_type" in args else None, unlisted=getattr(args, "unlisted_zone", False))
    if "experiment" not in args:
        if args.extra:
            raise UsageError(f"only launch and watch pass arguments after -- to the experiment; got {shlex.join(args.extra)}")
    elif args.experiment not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {args.experiment!r}; known: {', '.join(EXPERIMENTS)} (preference_bandits has no --run-dir or --resume)")
    else:
        bucket_of(args.run_dir)
        if taken := [a for a in args.extra if a.split("=")[0] in OWN_FLAGS]:
            raise UsageError(f"tpu.pod sets {', '.join(taken)} itself: give --run-dir before --, and leave out the rest")
        if "--dry-run" in args.extra:
            raise UsageError("--dry-run goes before --: after it, arguments are the experiment's")
    worker = getattr(args, "worker", "all")
    if worker != "all" and not worker.isdigit():
        raise UsageError(f"--worker must be a worker index or all, got {worker!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; 0 on success, 2 (one line on stderr) for a usage mistake, 1 for a failure."""
    try:
        args = parse(list(sys.argv[1:] if argv is None else argv))
        SUBCOMMANDS[args.command](args, Shell(args.dry_run))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
