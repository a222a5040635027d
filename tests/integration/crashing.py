"""Fault injection for the kill/resume tests: run a grokscope command in a child process that SIGKILLs itself at a
chosen moment, like a power cut or the OOM killer.

Children are forked from a forkserver that has already imported torch and TransformerLens, so a kill point costs
about a second rather than an interpreter start. A kill point is ``(where, n)``:

* ``("write", n)``: in the n-th atomic file write, after the temporary file is complete, before it is renamed
  (a checkpoint, the metrics, the trainer state, the marker, the config, ...);
* ``("written", n)``: just after the n-th atomic write has been renamed into place, before the next one;
* ``("update", n)``: just after the n-th optimizer update, between checkpoints.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

from typer.testing import CliRunner

PRELOAD = ["torch", "transformer_lens", "grokscope.cli", "grokscope.training.many"]


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _child(argv: list[str], where: str, n: int, counts: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import grokscope.store as store
    import grokscope.training.loop as loop

    seen = {"write": 0, "update": 0}
    real_write, real_update = store.atomic_write, loop.apply_update

    def atomic_write(path, write):  # type: ignore[no-untyped-def]
        seen["write"] += 1
        hit = seen["write"] == n
        if hit and where == "write":

            def write_then_die(tmp):  # type: ignore[no-untyped-def]
                write(tmp)
                _die()

            real_write(path, write_then_die)
        real_write(path, write)
        if hit and where == "written":
            _die()

    def apply_update(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_update(*args, **kwargs)
        seen["update"] += 1
        if where == "update" and seen["update"] == n:
            _die()

    store.atomic_write = atomic_write
    loop.apply_update = apply_update
    import grokscope.training.many as many

    many.apply_update = apply_update  # imported by name there

    from grokscope.cli import app

    result = CliRunner().invoke(app, argv)
    counts.write_text(f"{seen['write']} {seen['update']} {result.exit_code}\n{result.output}")


def run_killed(argv: list[str], where: str, n: int, scratch: Path) -> tuple[bool, int, int]:
    """Run ``grokscope *argv`` in a child killed at ``(where, n)``. Returns (killed, writes, updates): whether the
    kill happened, and how many writes and updates a run that was not killed made (for choosing kill points)."""
    counts = scratch / f"counts-{where}-{n}.txt"
    counts.unlink(missing_ok=True)
    process = _context().Process(target=_child, args=([str(a) for a in argv], where, n, counts))
    process.start()
    process.join(timeout=300)
    if process.exitcode == -signal.SIGKILL:
        return True, 0, 0
    assert process.exitcode == 0, process.exitcode
    text = counts.read_text()
    writes, updates, code = (int(x) for x in text.split("\n", 1)[0].split())
    assert code == 0, text
    return False, writes, updates


def spawn(argv: list, report: Path) -> multiprocessing.process.BaseProcess:
    """Start ``grokscope *argv`` in a child (no kill point); when it ends, ``report`` holds
    ``"<writes> <updates> <exit code>"`` and then the command's output."""
    process = _context().Process(target=_child, args=([str(a) for a in argv], "none", 0, report))
    process.start()
    return process


def outcome(report: Path) -> tuple[int, str]:
    """The exit code and output of a command run by :func:`spawn` (after it ended)."""
    head, _, output = report.read_text().partition("\n")
    return int(head.split()[2]), output
