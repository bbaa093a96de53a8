"""The only filesystem code of ``deid``: walk a source folder, de-identify in worker processes,
write outputs atomically under PHI-free names, and a manifest of pseudonymous ids.

Symbolic links are never followed (a link may lead out of the source folder: to another patient's
files, to the installation's secrets): a linked file or folder is refused with that reason, as is
anything that is not a regular file (a FIFO would block the run). One file that fails in any way is
refused and the run goes on; the manifest is always written.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deid.engine import deidentify_bytes
from deid.types import DeidOptions
from medlabel.errors import InputError
from medlabel.files import write_atomic

MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class FileOutcome:
    source: str          # the provider's own path, for their summary only (never written to DST)
    status: str          # released | flagged | refused
    output: str | None   # path relative to DST
    reason: str = ""
    patient: str | None = None
    study: str | None = None
    series: str | None = None


def load_or_create_key(path: Path) -> bytes:
    """Read a key file (>= 32 bytes), creating a random one with 0600 permissions if absent."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(MIN_KEY_BYTES))
    key = path.read_bytes()
    if len(key) < MIN_KEY_BYTES:
        raise InputError(path, f"key file holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def iter_sources(src: Path) -> Iterator[Path]:
    """Every entry under ``src`` to de-identify, sorted, hidden ones skipped; links to folders are listed
    (to be refused by :func:`read_regular`), never walked into."""
    if not src.is_dir():
        yield src
        return
    for root, dirs, files in os.walk(src):  # followlinks=False: a linked folder is not entered
        linked = sorted(d for d in dirs if not d.startswith(".") and (Path(root) / d).is_symlink())
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
        for name in sorted([*files, *linked]):
            if not name.startswith("."):
                yield Path(root) / name


LINK_REASON = "symbolic link: not followed (it may lead out of the source folder)"


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file; a symbolic link or anything else is refused (``InputError``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP or Path(path).is_symlink():
            raise InputError(path, LINK_REASON) from None
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise InputError(path, "not a regular file")
        return handle.read()


def _output_name(result_kind: str, patient: str | None, study: str | None, series: str | None, data: bytes,
                 suffix: str, flagged: bool) -> Path:
    digest = hashlib.sha256(data).hexdigest()[:16]
    top = Path("_flagged") if flagged else Path()
    if result_kind == "photo":
        return top / "photos" / f"{digest}{suffix}"
    def short(uid: str | None) -> str:
        return hashlib.sha256((uid or "").encode()).hexdigest()[:12]

    return top / (patient or "unknown") / f"study-{short(study)}" / f"series-{short(series)}" / f"{digest}{suffix}"


def process_one(args: tuple[str, str, bytes, DeidOptions]) -> FileOutcome:
    source, dst, key, options = args
    try:
        data = read_regular(Path(source))
        result = deidentify_bytes(data, key=key, name=source, options=options)
    except InputError as exc:
        return FileOutcome(source, "refused", None, exc.reason)
    except OSError as exc:
        return FileOutcome(source, "refused", None, f"cannot read ({exc.strerror})")
    except Exception as exc:  # noqa: BLE001 - one odd file never stops the run; its message may quote a value
        return FileOutcome(source, "refused", None, f"cannot be de-identified ({type(exc).__name__})")
    if result.status == "refused" or result.output is None:
        return FileOutcome(source, "refused", None, result.reason)
    relative = _output_name(result.kind, result.patient_pseudonym, result.study_pseudonym, result.series_pseudonym,
                            result.output, result.suffix, result.status == "flagged")
    try:
        write_atomic(Path(dst) / relative, result.output)
    except OSError as exc:
        return FileOutcome(source, "refused", None, f"cannot write the output ({exc.strerror})")
    return FileOutcome(source, result.status, relative.as_posix(), result.reason, result.patient_pseudonym,
                       result.study_pseudonym, result.series_pseudonym)


def deidentify_tree(src: Path, dst: Path, *, key: bytes, options: DeidOptions, workers: int = 2,
                    progress: Callable[[FileOutcome], None] | None = None) -> list[FileOutcome]:
    """De-identify every file under ``src`` into ``dst``; writes ``dst/manifest.csv``."""
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents and src.is_dir():
        raise InputError(dst, "the destination must not be inside the source folder")
    dst.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), str(dst), key, options) for p in iter_sources(src)]
    outcomes: list[FileOutcome] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            outcomes.append(process_one(job))
            if progress:
                progress(outcomes[-1])
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for outcome in pool.map(process_one, jobs, chunksize=4):
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
    rows = sorted((o for o in outcomes if o.output), key=lambda o: o.output or "")
    buffer: list[list[str | None]] = [["file", "status", "patient_id", "study_uid", "series_uid"]]
    buffer += [[o.output, o.status, o.patient, o.study, o.series] for o in rows]
    import io

    text = io.StringIO()
    csv.writer(text).writerows(buffer)
    write_atomic(dst / "manifest.csv", text.getvalue().encode())
    return outcomes
