"""One path abstraction for local files and cloud storage (``gs://`` and the other fsspec URLs).

Every path the package reads or writes goes through these functions. A local path takes the plain ``os`` route
(unchanged behaviour, atomic renames); a URL (``scheme://...``) goes through fsspec (gcsfs for ``gs://``), the
same filesystem layer orbax's epath uses, so checkpoints, metrics, latents and stored models all land in one
bucket. Object stores have no atomic rename but every object appears whole when its upload ends, so
"write a temporary, then rename" becomes "write the object" there, and a directory is committed by writing its
marker file last (:func:`staged_directory`).

Libraries that only take local files (array_record, safetensors' writer) get a local staging directory that is
uploaded when complete, or a local mirror (:func:`mirror`) under the cache directory.

Credentials are the filesystem's own: on a TPU VM / GCE the metadata server, elsewhere Application Default
Credentials. Tests talk to a local emulator (``STORAGE_EMULATOR_HOST``, ``FSSPEC_GCS_TOKEN=anon``).
"""
from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import IO, Any, Iterator


class StoragePathError(OSError):
    """A cloud path that cannot be used: no filesystem for its scheme, no credentials, no such bucket."""


def is_url(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
    """A local path made absolute; a URL unchanged (without a trailing slash)."""
    path = os.fspath(path)
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    return (posixpath if is_url(base) else os.path).join(os.fspath(base), *parts)


def _configure_gcs() -> None:
    # Listings are cached per process by default; other hosts write shards and markers we poll, so look every time.
    import fsspec
    fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)
    # Recent gcsfs probes a bucket's type over gRPC first; an emulator (or a firewall) answers after 60 s.
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def filesystem(url: str):
    """(fsspec filesystem, path inside it) of a URL; :class:`StoragePathError` names the URL when the scheme's
    package is missing or the filesystem cannot be created (credentials)."""
    import fsspec
    _configure_gcs()
    scheme = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        hint = " (pip install gcsfs)" if scheme in ("gs", "gcs") else ""
        raise StoragePathError(f"{url}: no filesystem for {scheme}:// URLs{hint}: {e}") from e
    except Exception as e:  # credential libraries raise their own types
        raise StoragePathError(f"{url}: cannot open {scheme}:// storage ({type(e).__name__}: {e}); check the "
                               "credentials (gcloud auth application-default login, or the VM's service "
                               "account)") from e


# ------------------------------------------------------------------------------------------------ queries


def exists(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.exists(path)
    fs, inner = filesystem(path)
    return fs.exists(inner)


def isfile(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.isfile(path)
    fs, inner = filesystem(path)
    return fs.isfile(inner)


def isdir(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.isdir(path)
    fs, inner = filesystem(path)
    return fs.isdir(inner)


def listdir(path: str | os.PathLike) -> list[str]:
    """Sorted names directly under ``path`` (files and folders)."""
    path = os.fspath(path)
    if not is_url(path):
        return sorted(os.listdir(path))
    fs, inner = filesystem(path)
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False) if p.rstrip("/") != inner)


def walk_files(root: str | os.PathLike) -> list[str]:
    """Every file under ``root``, recursively, as full paths (URLs keep their scheme), sorted."""
    root = os.fspath(root)
    if not is_url(root):
        return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)
    fs, inner = filesystem(root)
    scheme = root.split("://", 1)[0]
    return sorted(f"{scheme}://{p}" for p in fs.find(inner))


def size(path: str | os.PathLike) -> int:
    path = os.fspath(path)
    if not is_url(path):
        return os.path.getsize(path)
    fs, inner = filesystem(path)
    return int(fs.size(inner))


# ------------------------------------------------------------------------------------------------ reading / writing


def open(path: str | os.PathLike, mode: str = "r", encoding: str | None = None) -> IO:  # noqa: A001 (builtin name)
    path = os.fspath(path)
    if not is_url(path):
        return builtins.open(path, mode, encoding=encoding if "b" not in mode else None)
    fs, inner = filesystem(path)
    if "b" in mode:
        return fs.open(inner, mode)
    return fs.open(inner, mode, encoding=encoding or "utf-8")


def read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str | os.PathLike) -> str:
    with open(path, "r", encoding="utf-8") as f:
        return f.read()


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_text(path))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Readers see the old file or the whole new one: local files via a temporary and a rename, objects because
    an upload appears only when complete."""
    path = os.fspath(path)
    if is_url(path):
        with open(path, "wb") as f:
            f.write(data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with builtins.open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename publishes it
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, value: Any, **dump_kwargs) -> None:
    write_text_atomic(path, json.dumps(value, **dump_kwargs))


def append_text(path: str | os.PathLike, text: str) -> None:
    """Appends to a local file; an object (which cannot be appended to) is read and rewritten whole. For small,
    infrequent records (benchmark rows), not for logs."""
    path = os.fspath(path)
    if not is_url(path):
        with builtins.open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return
    write_text_atomic(path, (read_text(path) if isfile(path) else "") + text)


def makedirs(path: str | os.PathLike) -> None:
    """Creates a local folder (and parents); object stores have no folders, so nothing to do there."""
    path = os.fspath(path)
    if not is_url(path):
        os.makedirs(path, exist_ok=True)


def remove(path: str | os.PathLike) -> None:
    path = os.fspath(path)
    if not is_url(path):
        os.remove(path)
        return
    fs, inner = filesystem(path)
    fs.rm_file(inner)


def rmtree(path: str | os.PathLike) -> None:
    """Removes a folder and everything in it; a missing one is fine."""
    path = os.fspath(path)
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, inner = filesystem(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def replace(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves a file over ``target`` (atomic locally; a server-side copy and delete in object stores)."""
    source, target = os.fspath(source), os.fspath(target)
    if not is_url(source) and not is_url(target):
        os.replace(source, target)
        return
    copy_file(source, target)
    remove(source)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    source, target = os.fspath(source), os.fspath(target)
    if not is_url(source) and not is_url(target):
        shutil.copyfile(source, target)
    elif is_url(source) and is_url(target) and source.split("://")[0] == target.split("://")[0]:
        fs, inner = filesystem(source)
        fs.copy(inner, filesystem(target)[1])
    elif is_url(target):
        fs, inner = filesystem(target)
        fs.put_file(source, inner)
    else:
        fs, inner = filesystem(source)
        makedirs(os.path.dirname(target) or ".")
        fs.get_file(inner, target)


def upload_tree(local: str, target: str, last: str | None = None) -> None:
    """Copies every file under the local folder ``local`` to the URL ``target`` (same relative paths); the file
    named ``last`` goes last, so its presence says the rest is complete."""
    files = sorted(os.path.relpath(p, local) for p in walk_files(local))
    if last is not None and last in files:
        files = [f for f in files if f != last] + [last]
    for relative in files:
        copy_file(os.path.join(local, relative), join(target, *relative.split(os.sep)))


@contextlib.contextmanager
def staged_directory(directory: str | os.PathLike, marker: str | None = None, tag: str = "partial") -> Iterator[str]:
    """Yields a local folder to build ``directory`` in. On success it replaces ``directory``: locally by renames
    (the old content moved aside first), in object storage by deleting the old content and uploading with
    ``marker`` last. On error the staging folder is removed and ``directory`` is untouched."""
    directory = absolute(directory)
    remote = is_url(directory)
    if remote:
        staging = tempfile.mkdtemp(prefix="stableaudio_jax-upload-")
    else:
        # a sibling (same filesystem: the final rename is atomic), with the umask's permissions, unlike mkdtemp's 0700
        name = f".{os.path.basename(directory)}.{tag}-{uuid.uuid4().hex[:8]}"
        staging = os.path.join(os.path.dirname(directory), name)
        os.makedirs(staging)
    try:
        yield staging
        if remote:
            rmtree(directory)
            upload_tree(staging, directory, last=marker)
        else:
            old = f"{staging}.old"
            if os.path.exists(directory):
                os.rename(directory, old)
            os.rename(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ caches


def cache_root() -> str:
    """Where local mirrors of remote data live: ``$STABLEAUDIO_JAX_CACHE``, else ``$XDG_CACHE_HOME`` or
    ``~/.cache``, then ``stableaudio_jax``."""
    root = os.environ.get("STABLEAUDIO_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "stableaudio_jax")
    return root


def local_copy(path: str | os.PathLike) -> str:
    """A local path for ``path``: itself when local, else the file mirrored into the cache."""
    path = os.fspath(path)
    if not is_url(path):
        return path
    folder, name = path.rstrip("/").rsplit("/", 1)
    return os.path.join(mirror(folder, [name]), name)


def local(path: str | os.PathLike) -> str:
    """A local path for a file or folder: itself when local, else its mirror in the cache."""
    path = os.fspath(path)
    if not is_url(path):
        return path
    return local_folder(path) if isdir(path) else local_copy(path)


def local_folder(path: str | os.PathLike) -> str:
    """A local folder for ``path``: itself when local, else the folder mirrored into the cache."""
    path = os.fspath(path)
    return mirror(path) if is_url(path) else path


def mirror(url: str, files: list[str] | None = None) -> str:
    """A local copy of the remote folder ``url`` (or of the listed relative ``files`` in it) under the cache, for
    readers that take local files only (array_record). A file is fetched again when the object changed (its
    listing entry: size, generation, checksum), so a rewritten bucket never serves a stale mirror."""
    url = absolute(url)
    fs, inner = filesystem(url)
    local = os.path.join(cache_root(), "mirror", hashlib.sha256(url.encode()).hexdigest()[:16])
    listing = {p[len(inner) + 1:]: info for p, info in fs.find(inner, detail=True).items()}
    wanted = sorted(listing) if files is None else list(files)
    missing = [name for name in wanted if name not in listing]
    if missing:
        raise FileNotFoundError(f"{url}: {', '.join(missing[:5])} not found")
    seen_path = os.path.join(local, ".mirror.json")
    seen = json.loads(builtins.open(seen_path).read()) if os.path.isfile(seen_path) else {}
    for relative in wanted:
        stamp = hashlib.sha256(json.dumps(listing[relative], sort_keys=True, default=str).encode()).hexdigest()
        target = os.path.join(local, *relative.split("/"))
        if seen.get(relative) == stamp and os.path.isfile(target):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        copy_file(join(url, relative), f"{target}.partial")
        os.replace(f"{target}.partial", target)
        seen[relative] = stamp
        write_json_atomic(seen_path, seen)
    return local


# ------------------------------------------------------------------------------------------------ checks


def check_access(path: str | os.PathLike, what: str = "path") -> None:
    """Fails early, naming ``path``, when a URL cannot be used: unknown scheme, missing package, no credentials,
    or a bucket that does not exist or is not visible with these credentials. Local paths pass."""
    path = os.fspath(path)
    if not is_url(path):
        return
    fs, inner = filesystem(path)
    bucket = inner.split("/", 1)[0]
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError as e:
        raise StoragePathError(f"{what} {path}: bucket {bucket!r} does not exist (or is not visible with these "
                               "credentials)") from e
    except Exception as e:
        raise StoragePathError(f"{what} {path}: cannot reach bucket {bucket!r} ({type(e).__name__}: {e}); check "
                               "the credentials (gcloud auth application-default login, or the VM's service "
                               "account) and the bucket name") from e
