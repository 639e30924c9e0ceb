"""Where a sweep's files live: a local (or shared) directory, or a prefix in an object store.

`Location.of("smsweep_runs/quickstart")` or `Location.of("s3://bucket/prefix/quickstart")`: every
read and write under `--storage` goes through a `Location`, so no other module asks which kind it
is. Object stores are reached through pyarrow's filesystems, the ones Ray Tune and Ray Train
write with; pyarrow reads the endpoint and credentials from the standard AWS settings
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3,
AWS_DEFAULT_REGION, ~/.aws), in every process that opens one: the driver, trials and workers.

Object stores have no directories, renames or exclusive creates: `create_new` there looks
before it writes (two drivers racing within the same second can both win; see `claim`), and
`put_directory` marks a directory complete with a last object (COMPLETE_MARKER) instead of
renaming it into place.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from smsweep.errors import SpecError

COMPLETE_MARKER = ".complete"  # object store: written last into a directory `put_directory` made


@dataclass(frozen=True)
class Location:
    """A file or directory: an absolute local path, or `scheme://bucket/key` in an object store.
    Only the text is kept (it pickles as such); the filesystem is opened on use."""

    url: str

    @classmethod
    def of(cls, where: str | os.PathLike | Location) -> Location:
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        if "://" in text and not text.startswith("file://"):
            return cls(text.rstrip("/"))
        return cls(str(Path(text.removeprefix("file://")).resolve()))

    @property
    def remote(self) -> bool:
        return "://" in self.url

    @property
    def path(self) -> Path:
        """The local path (only for a local location)."""
        if self.remote:
            raise ValueError(f"{self.url} is in an object store, not on a local disk")
        return Path(self.url)

    @property
    def name(self) -> str:
        return PurePosixPath(self.url).name

    @property
    def parent(self) -> Location:
        scheme, _, key = self.url.rpartition("://")
        parent = str(PurePosixPath(key).parent)
        return Location(f"{scheme}://{parent}" if scheme else parent)

    def __truediv__(self, name: str) -> Location:
        return Location(f"{self.url}/{name}")

    def __str__(self) -> str:
        return self.url

    def at(self, fs_path: str) -> Location:
        """The location at `fs_path` on this one's filesystem (pyarrow paths have no scheme:
        e.g. the path of a Ray Train checkpoint written under this location)."""
        scheme = self.url.partition("://")[0] if self.remote else ""
        return Location(f"{scheme}://{fs_path}" if scheme else fs_path)

    # --- reading --------------------------------------------------------------------------------

    def exists(self) -> bool:
        """A file, a directory, or (object store) a prefix that holds any object."""
        if not self.remote:
            return self.path.exists()
        return self._info().type != _fs().FileType.NotFound

    def is_file(self) -> bool:
        if not self.remote:
            return self.path.is_file()
        return self._info().type == _fs().FileType.File

    def read_bytes(self) -> bytes:
        """The file's contents; FileNotFoundError when there is none."""
        if not self.remote:
            return self.path.read_bytes()
        if not self.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such object", self.url)
        filesystem, key = _open(self.url)
        with filesystem.open_input_stream(key) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def mtime(self) -> float:
        """Seconds since the epoch of the last write (the file server's or object store's
        clock); FileNotFoundError when there is no file."""
        if not self.remote:
            return self.path.stat().st_mtime
        info = self._info()
        if info.type != _fs().FileType.File:
            raise FileNotFoundError(errno.ENOENT, "no such object", self.url)
        return info.mtime.timestamp()

    def files(self, pattern: str = "*") -> list[Location]:
        """The files directly inside this directory whose names match `pattern`, by name."""
        if not self.remote:
            if not self.path.is_dir():
                return []
            return [Location(str(p)) for p in sorted(self.path.glob(pattern)) if p.is_file()]
        filesystem, key = _open(self.url)
        selector = _fs().FileSelector(key, allow_not_found=True)
        found = filesystem.get_file_info(selector)
        names = sorted(
            PurePosixPath(info.path).name for info in found if info.type == _fs().FileType.File
        )
        return [self / name for name in names if fnmatch.fnmatchcase(name, pattern)]

    def complete_directories(self, pattern: str = "*") -> list[Location]:
        """The directories inside this one whose names match `pattern`, by name, that
        `put_directory` finished (a kill mid-copy leaves none half-written in this list)."""
        if not self.remote:
            if not self.path.is_dir():
                return []
            return [Location(str(p)) for p in sorted(self.path.glob(pattern)) if p.is_dir()]
        filesystem, key = _open(self.url)
        selector = _fs().FileSelector(key, allow_not_found=True)
        found = filesystem.get_file_info(selector)
        names = sorted(
            PurePosixPath(info.path).name for info in found if info.type == _fs().FileType.Directory
        )
        matching = [self / name for name in names if fnmatch.fnmatchcase(name, pattern)]
        return [directory for directory in matching if (directory / COMPLETE_MARKER).is_file()]

    @contextlib.contextmanager
    def local_directory(self) -> Iterator[Path]:
        """A local path holding this directory while in use: the directory itself, or a
        temporary copy of the objects under it."""
        if not self.remote:
            yield self.path
            return
        filesystem, key = _open(self.url)
        with tempfile.TemporaryDirectory(prefix="smsweep-") as scratch:
            _fs().copy_files(key, scratch, source_filesystem=filesystem)
            (Path(scratch) / COMPLETE_MARKER).unlink(missing_ok=True)
            yield Path(scratch)

    @contextlib.contextmanager
    def local_file(self) -> Iterator[Path]:
        """A local path holding this file while in use: the file itself, or a temporary copy
        of the object under the same name."""
        if not self.remote:
            yield self.path
            return
        with tempfile.TemporaryDirectory(prefix="smsweep-") as scratch:
            copy = Path(scratch) / self.name
            copy.write_bytes(self.read_bytes())
            yield copy

    # --- writing --------------------------------------------------------------------------------

    def write_bytes(self, data: bytes) -> None:
        """Write the file whole (an object appears whole; a local file's parents are made)."""
        if not self.remote:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # written aside and renamed over: a kill or a full disk never leaves half a file
            staging = self.path.with_name(f".{self.path.name}.{os.getpid()}.writing")
            staging.write_bytes(data)
            os.replace(staging, self.path)
            return
        filesystem, key = _open(self.url)
        with filesystem.open_output_stream(key) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def append_text(self, text: str) -> None:
        """Append to the file (an object is rewritten with the text added: objects are small
        here, and only their one writer appends)."""
        if not self.remote:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as file:
                file.write(text)
            return
        before = self.read_text() if self.is_file() else ""
        self.write_text(before + text)

    def touch(self) -> None:
        """Renew the file's modification time (an object is rewritten as it is)."""
        if not self.remote:
            os.utime(self.path)
            return
        self.write_bytes(self.read_bytes())

    def delete(self) -> None:
        """Remove the file if there is one."""
        if not self.remote:
            self.path.unlink(missing_ok=True)
            return
        if self.is_file():
            filesystem, key = _open(self.url)
            filesystem.delete_file(key)

    def create_new(self, text: str) -> None:
        """Create the file with `text`, appearing whole, or raise FileExistsError. Locally it is
        exclusive (written aside, then hard-linked into place: the link fails when the name
        exists, on local disks and on NFS alike); in an object store it looks, then writes."""
        if self.remote:
            if self.exists():
                raise FileExistsError(errno.EEXIST, "object exists", self.url)
            self.write_text(text)
            return
        path = self.path
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        aside.write_text(text)
        try:
            os.link(aside, path)
        except FileExistsError:
            raise
        except OSError as error:  # a filesystem without hard links: an exclusive create instead
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
        finally:
            aside.unlink(missing_ok=True)

    def make_new_directory(self) -> None:
        """Start a new directory, or raise FileExistsError when it exists. Locally the mkdir is
        what racing drivers compete for; an object store has no directories: it only looks."""
        if self.remote:
            if self.exists():
                raise FileExistsError(errno.EEXIST, "prefix holds objects", self.url)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.mkdir()

    def put_directory(self, source: Path) -> None:
        """Copy the local directory `source` here (a new directory) so that it appears
        complete: locally written aside and renamed into place; in an object store the files
        first, then COMPLETE_MARKER (`complete_directories` lists only those)."""
        if not self.remote:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".writing_", dir=self.path.parent))
            shutil.copytree(source, staging, dirs_exist_ok=True)
            staging.rename(self.path)
            return
        filesystem, key = _open(self.url)
        _fs().copy_files(str(source), key, destination_filesystem=filesystem)
        (self / COMPLETE_MARKER).write_text("")

    def remove_tree(self) -> None:
        """Remove this directory and everything under it (nothing when there is none)."""
        if not self.remote:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.exists():
            filesystem, key = _open(self.url)
            filesystem.delete_dir(key)

    def _info(self):
        filesystem, key = _open(self.url)
        return filesystem.get_file_info(key)


def check_storage(storage: Location) -> None:
    """Raise SpecError unless a sweep can write under `storage` (before anything is written):
    a local directory must exist or be creatable, and be writable; an object store must answer
    and hold the bucket."""
    if storage.remote:
        _check_bucket(storage)
        return
    existing = storage.path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(
            f"--storage {storage.url!r} cannot be created: {existing} is a file; choose a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError(
            f"--storage {storage.url!r} is not writable ({existing} denies writing); "
            "choose a directory you can write to"
        )


def _check_bucket(storage: Location) -> None:
    scheme, _, key = storage.url.partition("://")
    bucket = key.split("/")[0]
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    where = f"the object store at {endpoint}" if endpoint else f"the {scheme} object store"
    try:
        filesystem, _ = _open(storage.url)
    except Exception as error:  # pyarrow's ArrowInvalid: a scheme it has no filesystem for
        raise SpecError(
            f"--storage {storage.url!r} is not a storage URL pyarrow can open "
            f"({_first_line(error)}); give a directory or s3://BUCKET/PREFIX"
        ) from None
    try:
        found = filesystem.get_file_info(bucket)
    except Exception as error:  # pyarrow's OSError: the network, the credentials
        raise SpecError(
            f"--storage {storage.url!r}: {where} cannot be reached ({_first_line(error)}); "
            "check the endpoint (AWS_ENDPOINT_URL) and the credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY), or give a local directory"
        ) from None
    if found.type == _fs().FileType.NotFound:
        raise SpecError(
            f"--storage {storage.url!r}: {where} has no bucket {bucket!r}; create it (e.g. "
            f"`aws s3 mb {scheme}://{bucket}`) or name an existing bucket"
        )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _fs():
    import pyarrow.fs

    return pyarrow.fs


def _open(url: str):
    """(pyarrow filesystem, path on it) of an object-store URL; one filesystem per bucket."""
    scheme, _, key = url.partition("://")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _filesystem(f"{scheme}://{key.split('/')[0]}", endpoint), key


@functools.cache
def _filesystem(bucket_url: str, endpoint: str | None):
    """`endpoint` is part of the key only: pyarrow reads it from the environment itself."""
    filesystem, _ = _fs().FileSystem.from_uri(bucket_url)
    return filesystem


__all__ = ["Location", "check_storage"]
