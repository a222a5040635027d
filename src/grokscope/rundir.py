"""Owning a run directory: grokscope's marker, the one-process lock, and claiming a folder to train in.

A run directory is grokscope's when it carries :data:`MARKER_FILE`, which is written before anything else; only such
folders are ever cleared (``--overwrite``), and clearing removes only the entries grokscope writes. A folder made by
an older grokscope (no marker, but a config that parses and a split) is adopted as grokscope's. One process at a time
holds a run directory through an OS lock on :data:`LOCK_FILE` (``flock``: the OS drops it when the process dies, so
a killed run never leaves it stuck); the holder's pid and command are written into the lock file for the next one.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import socket
import sys
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from grokscope.config import RunConfig, config_differences, parse_config
from grokscope.errors import UserError
from grokscope.store import (
    ANALYSIS_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    MARKER_FILE,
    METRICS_FILE,
    RECORDINGS_DIR,
    SPLIT_FILE,
    SUMMARY_FILE,
    TRAINER_STATE_FILE,
    Run,
    load_split,
    write_marker,
)
from grokscope.tasks import ModularTask, task_split

LOCK_FILE = ".grokscope.lock"
REPORT_FILE = "report.html"
# What training writes at the top of a run directory (the checkpoints/, recordings/ and analysis/ folders aside).
RUN_FILES = (CONFIG_FILE, SPLIT_FILE, METRICS_FILE, SUMMARY_FILE, TRAINER_STATE_FILE)


class Kind(enum.Enum):
    """What a path holds, as far as starting a run there is concerned."""

    ABSENT = "absent"  # nothing there, or an empty folder (perhaps holding only a lock file)
    HALF = "half-created"  # grokscope's, killed before its first resume state: holds nothing past step 0
    STARTED = "started"  # grokscope's with a resume state: resumable (or finished)
    DAMAGED = "damaged"  # grokscope's with trained data but no usable resume state: only --overwrite replaces it
    FOREIGN = "not grokscope's"  # a folder with other things in it, or a file


def is_marked(path: Path) -> bool:
    """Whether ``path`` is a folder grokscope created (its marker), or an unmarked run of an older grokscope."""
    return (path / MARKER_FILE).is_file() or _is_legacy_run(path)


def _is_legacy_run(path: Path) -> bool:
    # Before the marker existed: a complete, parseable run config beside a split is only ever written by grokscope.
    config, split = path / CONFIG_FILE, path / SPLIT_FILE
    if not (config.is_file() and split.is_file()):
        return False
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        task = ModularTask.from_config(parse_config(data, source=str(config)).task)
        load_split(split, task.n_pairs)
    except (UserError, yaml.YAMLError, UnicodeDecodeError, OSError, TypeError, ValueError):
        return False
    return True


def kind_of(path: Path) -> Kind:
    """Classify ``path`` without changing anything on disk."""
    if not path.exists():
        return Kind.ABSENT
    if not path.is_dir():
        return Kind.FOREIGN
    if all(_holds_nothing(p) or _is_ours_unfinished(p) for p in path.iterdir()):
        return Kind.ABSENT
    if not is_marked(path):
        return Kind.FOREIGN
    state = path / TRAINER_STATE_FILE
    if state.is_file():
        return Kind.STARTED
    return Kind.DAMAGED if state.exists() or _holds_training(path) else Kind.HALF


def _holds_training(path: Path) -> bool:
    """Whether a run folder holds anything a start killed before its first resume state cannot have written:
    a checkpoint past step 0, a summary or analyses (what a plain start must never silently delete)."""
    checkpoints = path / CHECKPOINT_DIR
    later = checkpoints.is_dir() and any(
        _is_checkpoint(p.name) and p.name != "step_0000000.safetensors" for p in checkpoints.iterdir()
    )
    # Not recordings/: recorders flush at the step-0 checkpoint, before its resume state is written.
    analysed = (path / ANALYSIS_DIR).is_dir() and any((path / ANALYSIS_DIR).iterdir())
    return later or analysed or (path / SUMMARY_FILE).exists()


def _is_ours_unfinished(path: Path) -> bool:
    """The lock, or the temporary file of a marker whose writer was killed: what a start killed at once leaves."""
    return path.name == LOCK_FILE or _is_temp(path.name, (MARKER_FILE,))


def _holds_nothing(path: Path) -> bool:
    """An empty folder, or folders of empty folders (what an older grokscope left when killed while starting)."""
    return path.is_dir() and not path.is_symlink() and all(_holds_nothing(p) for p in path.iterdir())


def clear(path: Path) -> list[str]:
    """Remove what grokscope wrote in run directory ``path`` (not its marker or lock); return the names kept.

    Anything grokscope does not write (a user's notes, a foreign file in ``checkpoints/``) is left where it is.
    """
    if not is_marked(path):
        raise UserError(f"{path}: not a grokscope run directory (no {MARKER_FILE}); refusing to delete anything")
    odd = [name for name in (*RUN_FILES, REPORT_FILE) if (path / name).exists() and not (path / name).is_file()]
    if odd:  # checked before anything is deleted: a clear either happens whole or not at all
        raise UserError(f"{path / odd[0]}: expected a file, found a folder or special file; remove it by hand")
    # Held while everything goes: an analyze writing there is refused by name, before anything is deleted.
    analysis = (
        FolderLock(path / ANALYSIS_DIR, "grokscope train --overwrite") if (path / ANALYSIS_DIR).is_dir() else None
    )
    with analysis or nullcontext():
        if not (path / MARKER_FILE).is_file():  # an older grokscope's run: mark it, so a clear cut short stays ours
            write_marker(path)
        for name in (*RUN_FILES, REPORT_FILE):
            (path / name).unlink(missing_ok=True)
        if (path / RECORDINGS_DIR).is_dir():  # written only by the recorders of this run
            shutil.rmtree(path / RECORDINGS_DIR)
        if (path / ANALYSIS_DIR).is_dir():
            shutil.rmtree(path / ANALYSIS_DIR)
        checkpoints = path / CHECKPOINT_DIR
        if checkpoints.is_dir():
            for entry in checkpoints.iterdir():
                if entry.is_file() and (_is_checkpoint(entry.name) or _is_temp(entry.name)):
                    entry.unlink()
            if not any(checkpoints.iterdir()):
                checkpoints.rmdir()
    remove_stale_temps(path)
    kept = [p.name for p in path.iterdir() if p.name not in (MARKER_FILE, LOCK_FILE)]
    kept += [f"{CHECKPOINT_DIR}/{p.name}" for p in checkpoints.iterdir()] if checkpoints.is_dir() else []
    return sorted(kept)


def _is_checkpoint(name: str) -> bool:
    return name.startswith("step_") and name.endswith(".safetensors")


def _is_temp(name: str, targets: tuple[str, ...] = ()) -> bool:
    """store.atomic_write's temporary names, ``.<target>.<8 random characters>.tmp`` (for one of ``targets``, or for
    a checkpoint or a recording when none are given)."""
    if not (name.startswith(".") and name.endswith(".tmp")) or name.count(".") < 3:
        return False
    target = _target(name)
    if targets:
        return target in targets
    return _is_checkpoint(target) or target.endswith((".safetensors", ".jsonl"))


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files that a killed writer left beside the run's own files (under the run lock only:
    the holder is the only writer of these files). Returns what was removed."""
    removed = []
    for folder in (path / CHECKPOINT_DIR, path / RECORDINGS_DIR):
        if folder.is_dir():
            removed += [p for p in folder.iterdir() if p.is_file() and _is_temp(p.name)]
    if path.is_dir():
        removed += [p for p in path.iterdir() if p.is_file() and _is_temp(p.name, (*RUN_FILES, MARKER_FILE))]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def _target(temp_name: str) -> str:
    """``.metrics.jsonl.ab12cd.tmp`` -> ``metrics.jsonl``."""
    return temp_name[1:].rsplit(".", 2)[0]


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


@dataclass
class FolderLock:
    """An exclusive OS lock on ``folder/.grokscope.lock`` for this process; a second holder gets a one-line
    :class:`UserError` naming the pid that holds it. Use as a context manager, or ``acquire()``/``release()``."""

    folder: Path
    command: str = "grokscope"
    _fd: int | None = field(default=None, init=False, repr=False)

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # No O_TRUNC: a process that fails to get the lock must not wipe the holder's note.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"{self.folder}: cannot create or lock this folder ({err.strerror})") from None
        try:
            _lock(fd)
        except OSError:
            holder = _read_note(fd)
            os.close(fd)
            raise UserError(f"{self.folder}: in use by {holder}; wait for it to finish or stop it") from None
        self._fd = fd  # first: whatever happens next, release() can still drop the lock
        note = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": _now()}
        with suppress(OSError):  # a full disk only costs the next process the holder's name
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(note).encode(), 0)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # The file stays: unlinking it would let a third process lock a fresh file while a second waits on this one.
        with suppress(OSError):
            os.ftruncate(fd, 0)  # no stale holder's name for the next one to report
        _unlock(fd)
        os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_note(fd: int, attempts: int = 40) -> str:
    # The holder writes its note just after it got the lock: give it a moment before settling for no name.
    for _ in range(attempts):
        try:
            note = json.loads(os.pread(fd, 4096, 0).decode())
            return f"pid {note['pid']} on {note['host']} ({note['command']}, since {note['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.025)
    return "another process"


if sys.platform == "win32":  # pragma: no cover - exercised only on Windows
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 1 << 20, os.SEEK_SET)  # lock a byte past the note, so the note stays readable
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@dataclass
class Claim:
    """A run directory held by this process: the run, its resume state (None: starts at step 0) and the lock,
    which the caller releases when it is done with the run."""

    run: Run
    state: dict[str, Any] | None
    lock: FolderLock

    def release(self) -> None:
        self.lock.release()


def will_resume(run_dir: Path, resume: bool) -> bool:
    """Whether :func:`claim` will continue a started run (rather than start one), as things stand now."""
    return resume and kind_of(run_dir) is Kind.STARTED


def claim(config: RunConfig, run_dir: Path, *, resume: bool = False, overwrite: bool = False) -> Claim:
    """Take ``run_dir`` for training ``config``: continue it, or (re)create it, holding its lock.

    * ``resume``: continue a started run (its config must match); where there is none yet, or only a half-created
      one (killed before its first resume state), start afresh. Rerunning an interrupted command therefore always
      continues it, for one seed or a list.
    * ``overwrite``: replace a grokscope run (a half-created one too); only grokscope's own entries are removed.
    * neither: start where nothing is, or replace a half-created run (it holds nothing trained); refuse a started run.

    A file, or a folder grokscope did not create, is never touched (not even by a lock file).
    """
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if kind_of(run_dir) is Kind.FOREIGN:  # refused before a lock file is put in someone else's folder
        _refuse(Kind.FOREIGN, run_dir, resume, overwrite)
    split = task_split(config.task, config.split_seed)  # may refuse: before clear
    lock = FolderLock(run_dir, "grokscope train").acquire()
    try:
        kind = kind_of(run_dir)  # under the lock: another process may have changed it until now
        _refuse(kind, run_dir, resume, overwrite)
        remove_stale_temps(run_dir)
        if kind is Kind.STARTED and resume:
            run = Run.open(run_dir)
            diffs = config_differences(run.config, config)
            if diffs:
                more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
                raise UserError(f"--resume: {run_dir} was made with another config ({diffs[0]}{more})")
            return Claim(run, run.load_trainer_state(), lock)
        if kind is not Kind.ABSENT:
            clear(run_dir)
        return Claim(Run.create(run_dir, config, split), None, lock)
    except BaseException:
        lock.release()
        raise


def check_claimable(run_dirs: list[Path], *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse a list of run folders up front, as :func:`claim` would one by one: a seed list then starts whole or
    not at all (a folder held by another process is still found only when its turn comes)."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    for run_dir in run_dirs:
        kind = kind_of(run_dir)
        if kind not in (Kind.ABSENT, Kind.FOREIGN):
            with FolderLock(run_dir, "grokscope train"):  # held by another process: say so, first
                pass
        _refuse(kind, run_dir, resume, overwrite)


def _refuse(kind: Kind, run_dir: Path, resume: bool, overwrite: bool) -> None:
    if kind is Kind.FOREIGN:
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"{run_dir}: exists and is not a directory")
        raise UserError(
            f"{run_dir}: a folder grokscope did not create (no {MARKER_FILE}); refusing to write or delete anything "
            "in it; choose another --out or run name"
        )
    if kind is Kind.STARTED and not (resume or overwrite):
        raise UserError(f"{run_dir}: already exists; pass --resume to continue it or --overwrite to start over")
    if kind is Kind.DAMAGED and not overwrite:
        raise UserError(
            f"{run_dir}: holds a trained run but no usable {TRAINER_STATE_FILE}, so it cannot be resumed; "
            "pass --overwrite to start over (or choose another --out)"
        )
