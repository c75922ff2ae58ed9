"""Where bertkit writes, and how: the checks every verb makes before any compute, and atomic writes.

The rules, the same for every verb:
- an output that is also an input (or holds one) is refused, always;
- an existing output (a file, or a directory with anything in it) is replaced only with `--overwrite`;
  a run directory may also be continued with `--resume`;
- the place is checked first: a parent that is a file, a directory where a file is wanted, a
  directory that cannot be written are errors before a model is loaded;
- files are written to a temporary file beside the target and renamed over it, so a crash never
  leaves half a file; a failed write removes its temporary, and temporaries of killed processes are
  swept at the next start; written files get the usual permissions (0666 less the umask).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bertkit.errors import BertkitError

log = logging.getLogger("bertkit")

_TEMP = re.compile(r"^\..+\.tmp-(\d+)(\.[A-Za-z0-9]+)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path(path: Path) -> Path:
    """`dir/.name.tmp-PID.suffix`: beside the target (so the rename is atomic), with the writer's pid
    (so a later sweep knows whether its writer is gone) and the target's suffix (numpy, matplotlib
    and torch pick formats by suffix)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """`with atomic_path(p) as tmp: write(tmp)`: on success `tmp` replaces `p`; on failure it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors and tempfile create files 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_temps(directory: str | Path, only: str | None = None) -> int:
    """Remove the temporaries that killed writers left in `directory` (and its `checkpoint/`); with
    `only`, just those of that file name."""
    removed = 0
    for d in (Path(directory), Path(directory) / "checkpoint"):
        if not d.is_dir():
            continue
        for p in d.glob(f".{only}.tmp-*" if only else ".*"):
            m = _TEMP.match(p.name)
            if m and p.is_file() and not _alive(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.info("removed %d temporary file(s) left in %s by an interrupted run", removed, directory)
    return removed


def _same_or_inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _refuse_inputs(out: Path, inputs: Iterable, flag: str) -> None:
    target = out.resolve()
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if target == src or (target.is_dir() and target in src.parents):
            raise BertkitError(
                f"{flag} {out} is also an input ({given}): writing there would destroy it; choose another {flag}"
            )


def _check_place(out: Path, flag: str) -> None:
    """The nearest existing ancestor of `out` is a writable directory."""
    parent = out.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: mkdir would fail
            break
        parent = parent.parent
    if not parent.is_dir():
        raise BertkitError(f"{flag} {out}: {parent} is a file, not a directory; choose a path under a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BertkitError(f"{flag} {out}: cannot write in {parent} (permission denied); choose a writable place")


def check_output_file(path: str | Path, inputs: Iterable = (), overwrite: bool = False, flag: str = "--output") -> Path:
    """A file output, checked before any compute (see the module docstring); its parent is created."""
    out = Path(path)
    _refuse_inputs(out, inputs, flag)
    if out.is_dir():
        raise BertkitError(f"{flag} {out} is a directory; give a file path, e.g. {out / 'out'}{out.suffix}")
    _check_place(out, flag)
    if out.exists() and not overwrite:
        raise BertkitError(f"{flag} {out} already exists; pass --overwrite to replace it, or choose another {flag}")
    if out.exists() and not os.access(out, os.W_OK):
        raise BertkitError(f"{flag} {out} is read-only; make it writable or choose another {flag}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(out.parent, only=out.name)  # what a killed earlier write of this file left
    return out


def check_output_dir(
    path: str | Path, inputs: Iterable = (), overwrite: bool = False, resume: bool | None = None, flag: str = "--output"
) -> Path:
    """A directory output, checked before any compute. A non-empty one is refused unless `overwrite`
    (the caller replaces it, see `clear_dir`) or `resume` (the caller checks it holds the same job);
    `resume=None`: the verb has no --resume."""
    out = Path(path)
    if overwrite and resume:
        raise BertkitError("--overwrite starts the run again and --resume continues it: pass one of them")
    _refuse_inputs(out, inputs, flag)
    if out.exists() and not out.is_dir():
        raise BertkitError(f"{flag} {out} is a file; give a directory path")
    _check_place(out / "x", flag)
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise BertkitError(f"{flag} {out}: cannot write in it (permission denied); choose a writable place")
    entries = sorted(p.name for p in out.iterdir() if not _TEMP.match(p.name)) if out.is_dir() else []
    if entries and not (overwrite or resume):
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        hint = (
            "--resume to continue the run it holds, --overwrite to replace it"
            if resume is not None
            else "--overwrite to replace it"
        )
        raise BertkitError(f"{flag} {out} is not empty ({shown}); pass {hint}, or choose another {flag}")
    return out


def clear_dir(path: str | Path) -> None:
    """Empty a directory that `--overwrite` replaces (called once the new job's inputs are checked)."""
    out = Path(path)
    if not out.is_dir():
        return
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    log.info("--overwrite: removed the previous contents of %s", out)


@contextmanager
def replaced_dir(path: str | Path) -> Iterator[Path]:
    """`with replaced_dir(out) as tmp: write into tmp`: on success `tmp` takes `out`'s place (the old
    directory, if any, is removed after the swap); on failure `out` is left as it was."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


JOB_FILE = Path("checkpoint") / "job.json"


def content_hash(path: str | Path) -> str:
    """sha256 of a file, or of a pretraining data directory's index.json: what `--resume` compares."""
    p = Path(path)
    if p.is_dir():
        p = p / "index.json"
    digest = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_run(out: Path, job: dict, overwrite: bool, resume: bool, is_main: bool = True) -> None:
    """Take `out` for a training run once its inputs are read and checked (see `check_output_dir`).

    `job` is what must not change between a run and its resume (task, labels, model, data hashes);
    it is kept in checkpoint/job.json. With `resume` a different job is refused, naming what changed,
    before anything in `out` is touched; with `overwrite` the previous contents are removed now.
    """
    job = json.loads(json.dumps(job))  # the JSON form, as it is compared with the saved one
    if resume:
        _check_same_job(out, job)
    elif overwrite and is_main:
        clear_dir(out)
    if is_main:
        (out / JOB_FILE).parent.mkdir(parents=True, exist_ok=True)
        sweep_temps(out)
        atomic_write_text(out / JOB_FILE, json.dumps(job, indent=2, sort_keys=True) + "\n")


def _check_same_job(out: Path, job: dict) -> None:
    path = out / JOB_FILE
    if not path.is_file():
        entries = [p.name for p in out.iterdir() if not _TEMP.match(p.name)] if out.is_dir() else []
        if entries:
            raise BertkitError(
                f"--resume: {out} holds files but no {JOB_FILE}, the record of the run that wrote "
                "them, so it cannot be resumed safely; pass --overwrite to start again there, or "
                "choose another --output"
            )
        return  # nothing to resume: the run starts from the beginning
    old = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in sorted(set(old) | set(job)) if old.get(k) != job.get(k)]
    if changed:
        what = "; ".join(f"{k}: {_short(old.get(k))} then, {_short(job.get(k))} now" for k in changed[:4])
        raise BertkitError(
            f"--resume: {out} holds a run of another job ({what}); resume with the settings and "
            "data it was started with, pass --overwrite to start a new run there, or choose "
            "another --output"
        )


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
