"""Subprocess side of the parallel- and crash-safety tests (``python -m ...reliability.worker``).

``materialize``: materialize one ``instance_model`` partition against the persistent Dagster
instance in ``$DAGSTER_HOME``, after waiting at a file barrier so that concurrent workers train at
the same time, recording every path under the data root that this process creates, opens for
writing, renames or removes (Python audit hooks: the atomic writers create every artifact as a
``mkstemp``/``mkdtemp`` path of this process and move it into place with ``os.replace``; pyarrow
and XGBoost write only inside those paths).

``die-while-writing``: train an instance and SIGKILL this process after its first booster file
is written into the temporary directory, i.e. with a partial model directory on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def audit_writes(root: Path) -> list[tuple[str, str]]:
    root_s = os.path.realpath(root) + os.sep
    seen: list[tuple[str, str]] = []

    def note(event: str, path) -> None:
        if isinstance(path, (str, bytes, os.PathLike)) and not isinstance(path, int):
            p = os.path.realpath(os.fsdecode(path))
            if p.startswith(root_s):
                seen.append((event, p[len(root_s):]))

    def hook(event: str, args: tuple) -> None:
        if event == "open" and len(args) >= 3 and isinstance(args[2], int) and args[2] & WRITE_FLAGS:
            note(event, args[0])
        elif event in ("os.rename", "shutil.copyfile", "shutil.move"):
            note(event, args[0])
            note(event, args[1])
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            note(event, args[0])

    sys.addaudithook(hook)
    return seen


def wait_at_barrier(barrier: Path, name: str, parties: int, timeout: float = 120.0) -> None:
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"ready-{name}").touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.glob("ready-*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {barrier}: {len(list(barrier.glob('ready-*')))} of {parties} ready")
        time.sleep(0.02)


def cmd_materialize(args: argparse.Namespace) -> int:
    import dagster as dg

    from ensemble_assets.core.artifacts import planned_config
    from ensemble_assets.core.config import PlatformConfig
    from ensemble_assets.defs.training.assets import instance_model
    from ensemble_assets.runs import materialize

    cfg = planned_config(PlatformConfig(data_root=str(args.data_root)))
    seen = audit_writes(Path(args.data_root))
    with dg.DagsterInstance.get() as instance:
        wait_at_barrier(Path(args.barrier), args.partition, args.parties)
        t0 = time.time()
        ok, errors = materialize(cfg, instance, [instance_model], partition_key=args.partition, log=lambda m: None)
        t1 = time.time()
    Path(args.report).write_text(json.dumps({"partition": args.partition, "ok": ok, "errors": errors,
                                             "start": t0, "end": t1, "pid": os.getpid(), "writes": seen}))
    return 0 if ok else 1


def cmd_die_while_writing(args: argparse.Namespace) -> int:
    from ensemble_assets.core import stages
    from ensemble_assets.core.artifacts import planned_config
    from ensemble_assets.core.config import PlatformConfig
    from ensemble_assets.core.training import loop as training

    cfg = planned_config(PlatformConfig(data_root=str(args.data_root)))
    real = training.sha256_file

    def checksum_then_die(path):
        digest = real(path)
        if Path(path).name.startswith("booster_"):  # first booster saved in the temporary dir
            os.kill(os.getpid(), signal.SIGKILL)
        return digest

    training.sha256_file = checksum_then_die
    stages.run_instance(cfg, args.partition)
    return 3  # not reached


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("materialize")
    m.add_argument("--data-root", required=True)
    m.add_argument("--partition", required=True)
    m.add_argument("--barrier", required=True)
    m.add_argument("--parties", type=int, default=2)
    m.add_argument("--report", required=True)
    m.set_defaults(func=cmd_materialize)
    d = sub.add_parser("die-while-writing")
    d.add_argument("--data-root", required=True)
    d.add_argument("--partition", required=True)
    d.set_defaults(func=cmd_die_while_writing)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
