"""Hugging Face Hub access for the converters: repository ids, revisions, file listings and downloads, with the
Hub's errors turned into one-line :class:`HubError` messages that name the repository and what to do.

Everything goes through ``huggingface_hub`` (its cache, its token lookup, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``):

- the token: ``token=`` (a string; ``False`` sends none), else ``HF_TOKEN``, else the saved ``hf auth login``;
- downloads land in the Hugging Face cache (``HF_HUB_CACHE``), shared with diffusers / transformers, and are always
  asked for at a resolved commit, so a file already there is never fetched again;
- offline (``HF_HUB_OFFLINE=1``) a branch or tag is resolved from the caches' refs and a file listing is the
  Hugging Face cache's snapshot of that commit: no request is made.

:mod:`stableaudio_jax.convert.pretrained` decides which files a model needs and keeps the converted models.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Iterator

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.utils import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                   OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

from stableaudio_jax.store.format import StoreError

logger = logging.getLogger(__name__)

SCHEME = "hf:"
DEFAULT_REVISION = "main"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
# exception modules of the HTTP stacks huggingface_hub has used: a failure there is "the Hub cannot be reached"
_TRANSPORT_MODULES = ("httpx", "httpx2", "httpcore", "requests", "urllib3")


class HubError(StoreError):
    """A model that cannot be fetched from the Hub: gated, missing, unreachable, or without the files needed (a
    store error: every command reports it as one line, exit code 2)."""


def is_commit(revision: str | None) -> bool:
    return revision is not None and _COMMIT.fullmatch(revision) is not None


def parse_repo_spec(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """``hf:OWNER/NAME[@REVISION]`` (the ``hf:`` optional) → (repo id, revision). A revision in the spec and in
    ``revision`` must agree. Revisions may contain ``/`` (``refs/pr/1``); repo ids never contain ``@``."""
    text = spec[len(SCHEME):] if spec.startswith(SCHEME) else spec
    repo_id, _, in_spec = text.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubError(f"{spec!r} is not a Hugging Face model id; expected hf:OWNER/NAME[@REVISION], e.g. "
                       "hf:stabilityai/stable-audio-open-1.0")
    if "@" in text and not in_spec:
        raise HubError(f"{spec!r}: nothing after '@'; expected a branch, tag or commit")
    if in_spec and revision and in_spec != revision:
        raise HubError(f"{spec!r} names revision {in_spec!r} but revision={revision!r} was also given")
    return repo_id, in_spec or revision


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub read it (at import; tests and notebooks may set the constant)."""
    return bool(constants.HF_HUB_OFFLINE)


@dataclass(frozen=True)
class Hub:
    """Where and as whom to ask: ``endpoint`` None is ``HF_ENDPOINT`` / huggingface.co; ``token`` None lets
    huggingface_hub find one (``HF_TOKEN``, the saved login)."""

    token: str | bool | None = None
    endpoint: str | None = None

    @property
    def url(self) -> str:
        return (self.endpoint or constants.ENDPOINT).rstrip("/")

    def has_token(self) -> bool:
        if self.token is False:
            return False
        return bool(self.token) or huggingface_hub.get_token() is not None


# ------------------------------------------------------------------------------------------------- errors


def _unreachable(error: BaseException) -> bool:
    """A failure to talk to the Hub at all (no network, DNS, timeout, a 5xx), as opposed to a definite answer."""
    if isinstance(error, OfflineModeIsEnabled) or isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        return status is None or status >= 500 or status == 429
    return type(error).__module__.split(".")[0] in _TRANSPORT_MODULES


def _message(error: BaseException, repo_id: str, revision: str, hub: Hub) -> str | None:
    """The one-line explanation of a huggingface_hub error (None: not a Hub answer we know)."""
    page = f"{hub.url}/{repo_id}"
    login = "pass --token (token=...) or set HF_TOKEN, or run `hf auth login` (older: `huggingface-cli login`)"
    if isinstance(error, GatedRepoError):
        if hub.has_token():
            return (f"{repo_id} is a gated repository and the Hugging Face token used has no access to it: accept "
                    f"its licence at {page} with the account the token belongs to")
        return f"{repo_id} is a gated repository and no Hugging Face token was found: accept its licence at " \
               f"{page}, then {login}"
    if isinstance(error, RepositoryNotFoundError):
        return (f"no model repository {repo_id!r} at {hub.url} (or it is private and the token used cannot see "
                f"it): check the id (OWNER/NAME, e.g. stabilityai/stable-audio-open-1.0); for a private one {login}")
    if isinstance(error, RevisionNotFoundError):
        return (f"{repo_id} has no revision {revision!r}: give one of its branches, tags or 40-character commits "
                f"(see {page}/commits/main)")
    if isinstance(error, LocalEntryNotFoundError):
        if offline():
            return (f"{repo_id}@{revision}: HF_HUB_OFFLINE is set and the files needed are not in the Hugging Face "
                    f"cache ({constants.HF_HUB_CACHE}); run once online or unset HF_HUB_OFFLINE")
        return f"cannot reach {hub.url} to download {repo_id}@{revision} and it is not cached: check the " \
               "network or HF_ENDPOINT"
    if isinstance(error, EntryNotFoundError):  # a file the listing named: the repo changed under us
        url = str(getattr(getattr(error, "response", None), "url", "") or "")
        name = url.partition("/resolve/")[2].partition("/")[2] or "a file"
        return f"{repo_id}@{revision}: the Hub has no {name} although the repo's listing names it; try again"
    if _unreachable(error):
        return f"cannot reach {hub.url} for {repo_id}@{revision} ({type(error).__name__}: " \
               f"{str(error).splitlines()[0] if str(error) else ''}): check the network or HF_ENDPOINT"
    return None


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str, hub: Hub) -> Iterator[None]:
    """Turns the Hub's answers (gated, missing repo / revision / file, unreachable) into :class:`HubError`."""
    try:
        yield
    except HubError:
        raise
    except Exception as e:  # noqa: BLE001 - only Hub answers are translated; the rest re-raises as it was
        message = _message(e, repo_id, revision, hub)
        if message is None:
            raise
        raise HubError(message) from e


# ------------------------------------------------------------------------------------------ revisions, files


def _hf_repo_folder(repo_id: str) -> str:
    return os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))


def cached_ref(repo_id: str, revision: str) -> str | None:
    """The commit the Hugging Face cache last saw ``revision`` (a branch / tag) at, or None."""
    path = os.path.join(_hf_repo_folder(repo_id), "refs", revision)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            commit = f.read().strip()
        return commit if is_commit(commit) else None
    return None


def _remember_ref(repo_id: str, revision: str, commit: str) -> None:
    """Records ``revision`` → ``commit`` in the Hugging Face cache's ``refs/`` (what ``snapshot_download`` of a
    branch records; downloads by commit do not), so an offline run can resolve the branch from that cache too."""
    path = os.path.join(_hf_repo_folder(repo_id), "refs", revision)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(commit)
        os.replace(tmp, path)
    except OSError as e:  # a read-only shared cache: offline runs then need the converted cache's own refs
        logger.debug("cannot record %s@%s in the Hugging Face cache: %s", repo_id, revision, e)


def remote_state(repo_id: str, revision: str, hub: Hub) -> tuple[str, list[str]]:
    """(commit, every file's path) of ``repo_id`` at ``revision``: one metadata request (files are not fetched)."""
    with hub_errors(repo_id, revision, hub):
        info = huggingface_hub.HfApi(endpoint=hub.endpoint, token=hub.token).model_info(repo_id, revision=revision)
    if not info.sha:
        raise HubError(f"{hub.url} answered for {repo_id}@{revision} without a commit sha; is HF_ENDPOINT a Hub?")
    return info.sha, sorted(s.rfilename for s in (info.siblings or []))


def cached_files(repo_id: str, commit: str) -> list[str]:
    """The files of ``commit`` in the Hugging Face cache (what an offline listing can know)."""
    folder = os.path.join(_hf_repo_folder(repo_id), "snapshots", commit)
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/") for n in names]
    return sorted(found)


def resolve(repo_id: str, revision: str | None, hub: Hub, known_ref: str | None = None) -> tuple[str, list[str] | None]:
    """(commit, file listing or None) for ``revision`` (default ``main``). A commit is returned as it is, without
    asking. A branch or tag is asked for online; offline, or when the Hub cannot be reached, it is ``known_ref``
    (the commit the caller's own cache recorded) or the Hugging Face cache's ref, with its cached listing."""
    revision = revision or DEFAULT_REVISION
    if is_commit(revision):
        return revision, None
    if not offline():
        try:
            commit, files = remote_state(repo_id, revision, hub)
            _remember_ref(repo_id, revision, commit)
            return commit, files
        except HubError as e:
            if not _unreachable(e.__cause__) or not (known_ref or cached_ref(repo_id, revision)):
                raise
            logger.warning("%s; using the cached %s@%s", e, repo_id, revision)
    commit = known_ref or cached_ref(repo_id, revision)
    if commit is None:
        raise HubError(f"{repo_id}@{revision}: HF_HUB_OFFLINE is set (or {hub.url} cannot be reached) and no cache "
                       f"knows which commit {revision!r} is; run once online, or give a commit")
    return commit, None


def listing(repo_id: str, commit: str, hub: Hub) -> list[str]:
    """The files of ``repo_id`` at ``commit``: the Hub's listing online, the Hugging Face cache's offline."""
    if offline():
        files = cached_files(repo_id, commit)
        if not files:
            raise HubError(f"{repo_id}@{commit}: HF_HUB_OFFLINE is set and the Hugging Face cache "
                           f"({constants.HF_HUB_CACHE}) holds nothing of that commit; run once online")
        return files
    return remote_state(repo_id, commit, hub)[1]


def download(repo_id: str, commit: str, filenames: list[str], hub: Hub) -> dict[str, str]:
    """{name: local path} of ``filenames`` at ``commit``, fetched into the Hugging Face cache unless already there
    (at a commit huggingface_hub does not ask the Hub for a file it holds)."""
    out = {}
    with hub_errors(repo_id, commit, hub):
        for name in filenames:
            out[name] = huggingface_hub.hf_hub_download(repo_id, name, revision=commit, token=hub.token,
                                                        endpoint=hub.endpoint)
    return out
