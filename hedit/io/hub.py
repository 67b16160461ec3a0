"""The Hugging Face Hub as a model source: ``owner/name`` (optionally ``owner/name@revision``).

Only safetensors weights, JSON configs and tokenizer files are downloaded (never pickled ``.bin``
weights), into the usual Hub cache. The endpoint (``HF_ENDPOINT``), cache (``HF_HUB_CACHE``) and token
(``HF_TOKEN`` or the login cache) are read when called. Offline, or with the Hub out of reach, a model
already in the cache is used; otherwise a one-line error says why.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from hedit.errors import HeditError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+(@[A-Za-z0-9._/-]+)?$")
ALLOW_PATTERNS = ["*.safetensors", "*.json", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt", "*.jinja"]


def is_repo_id(text: str) -> bool:
    return bool(REPO_ID.match(text)) and not text.startswith((".", "/"))


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when the Hub would take it as a repository name (huggingface_hub's own rule: no
    ``..``, ``--``, leading ``.``, ``.git`` ending, at most 96 characters), else one HeditError."""
    if not is_repo_id(repo_id) or "@" in repo_id:
        raise HeditError(f"--repo-id must look like owner/name, got {repo_id!r}")
    return _hub_name(repo_id, "--repo-id ")


def _hub_name(repo_id: str, label: str = "") -> str:
    """``repo_id`` when huggingface_hub's own validator takes it, else one HeditError (``label`` first)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        why = str(e).split(". ")[0].strip().rstrip(".")
        raise HeditError(f"{label}{repo_id[:100]!r} is not a name the Hub accepts ({why[:160]})") from None
    return repo_id


def check_revision(revision: str, spec: str) -> str:
    """``revision`` when it is a branch, tag or commit name of the Hub's own form (git's ref-name rules:
    no ``..``, no component starting with ``.`` or ending with ``.lock``, no empty component, at most
    255 characters), else one HeditError, before any call: huggingface_hub writes ``refs/<revision>``
    in its cache, so ``@../../x`` would replace a file outside it."""
    parts = revision.split("/")
    bad = (
        not revision
        or len(revision) > 255
        or ".." in revision
        or not re.fullmatch(r"[A-Za-z0-9._/-]+", revision)
        or revision.endswith(".")
        or any(not c or c.startswith(".") or c.endswith(".lock") for c in parts)
    )
    if bad:
        raise HeditError(
            f"{spec[:120]!r}: {revision[:80]!r} is not a revision the Hub has (a branch, tag or commit name; "
            "no '..', no empty or hidden path component)"
        )
    return revision


def parse_spec(spec: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of ``owner/name[@revision]``, both checked as the Hub checks them
    (huggingface_hub's own repo-id validator, and ``check_revision``) before any download."""
    repo_id, at, revision = spec.partition("@")
    if not re.fullmatch(r"[^/\s]+/[^/\s]+", repo_id):
        raise HeditError(f"{spec[:120]!r} is not a Hub id owner/name[@revision]")
    return _hub_name(repo_id), (check_revision(revision, spec) if at else None)


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


@contextlib.contextmanager
def hub_errors(
    repo_id: str, url: str, revision: str | None = None, offline: bool = False, what: str = "model"
) -> Iterator[None]:
    """Turns the Hub client's errors into one-line HeditErrors (which never carry the token); ``what``
    the repository is (model, dataset) names it in the messages."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except RevisionNotFoundError:
        raise HeditError(f"{repo_id} on the Hub has no revision {revision!r}") from None
    except GatedRepoError:
        raise HeditError(f"{repo_id} is gated on the Hub: accept its terms and log in (HF_TOKEN)") from None
    except RepositoryNotFoundError as e:
        if e.response is not None and e.response.status_code == 401 and "Invalid credentials" in str(e):
            raise HeditError(
                f"the Hub at {url} refused the credentials (401): set HF_TOKEN or run `hf auth login`"
            ) from None
        raise HeditError(
            f"no {what} {repo_id} on the Hub at {url} (a private one needs a token: HF_TOKEN or `hf auth login`)"
        ) from None
    except LocalEntryNotFoundError as e:
        why = "the Hub is offline (HF_HUB_OFFLINE)" if offline else f"cannot reach the Hub at {url}"
        cause = str(e.__cause__ or e).splitlines()[0] if not offline else ""
        raise HeditError(f"{why} and {repo_id} is not in the local cache{': ' + cause if cause else ''}") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise HeditError(
                f"the Hub at {url} refused the credentials (401): set HF_TOKEN or run `hf auth login`"
            ) from None
        if status == 403:
            raise HeditError(f"the Hub at {url} does not let this token write to {repo_id} (403)") from None
        raise HeditError(f"the Hub at {url} answered {status or 'an error'} for {repo_id}") from None
    except OSError as e:
        raise HeditError(f"cannot reach the Hub at {url} for {repo_id}: {e}") from None
    except ValueError as e:
        if "Invalid metadata in README.md" not in str(e):
            raise
        raise HeditError(f"the Hub refused the model card's metadata: {' '.join(str(e).split())}") from None
    except Exception as e:  # the HTTP client's own errors (a dropped connection, a protocol error)
        if not type(e).__module__.startswith(("httpx", "httpcore")) and not isinstance(e.__cause__, OSError):
            raise
        raise HeditError(f"cannot reach the Hub at {url} for {repo_id}: {type(e).__name__}: {e}") from None


def download(spec: str) -> Path:
    """The local snapshot folder of ``owner/name[@revision]``, downloaded when needed."""
    from huggingface_hub import snapshot_download

    repo_id, revision = parse_spec(spec)
    url = endpoint()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    with hub_errors(repo_id, url, revision, offline):
        path = Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                allow_patterns=ALLOW_PATTERNS,
                endpoint=url,
                cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                local_files_only=offline,
            )
        )
    if not any(path.glob("*.safetensors")):
        raise HeditError(f"{repo_id} has no safetensors weights (hedit never loads pickled .bin files)")
    return path
