"""Where a model named on the command line comes from, checked once before anything is loaded.

`check_model_source(name)` takes a local folder as it is; a path that does not exist is named as such (not as a
malformed Hub id); a Hub id is checked with ONE request to the Hub (short timeout, no retries). When the Hub cannot
be reached, a copy in the local cache is used offline (`HF_HUB_OFFLINE` is switched on for the process, so that
transformers does not retry each file for minutes); without one, the run stops with one line:

    could not download 'gpt2': no network? set HF_HUB_OFFLINE=1 or pass a local folder

With `HF_HUB_OFFLINE=1` nothing is requested: the cached copy, or the same kind of one-line error.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# seconds for the one request that tells whether the Hub can be reached
HUB_TIMEOUT_S = float(os.environ.get("VGD_HUB_TIMEOUT", "10"))


class ModelSourceError(OSError):
    """The model named cannot be found locally and cannot be downloaded (the message says why, in one line)."""


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((os.sep, ".", "~"))
        or name.count("/") > 1
        or name.endswith(("/", ".json", ".safetensors", ".bin"))
        or os.path.exists(name)
    )


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def go_offline() -> None:
    """Switch huggingface_hub (and transformers, which asks it) to offline mode for this process."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def _cached(repo_id: str, filename: str = "config.json") -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:
        return False


def check_model_source(name: str, flag: str = "--model_name_or_path") -> str:
    """Return `name` when a model can be loaded from it (a local folder, a cached or reachable Hub id); else raise
    a `ModelSourceError` that says in one line why (missing folder, malformed id, no network, unknown repo)."""
    if not name:
        raise ModelSourceError(f"{flag} is empty: pass a local folder or a Hub id such as 'gpt2'")
    if os.path.isdir(name):
        return name
    if _looks_like_path(name):
        what = "is a file, not a model folder" if os.path.exists(name) else "does not exist"
        raise ModelSourceError(f"{flag} {name}: {what} (a model folder holds config.json and the weights)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelSourceError(f"{flag} {name}: no such local folder, and not a Hub id (such as 'gpt2' or 'user/model')") from None
    if _offline():
        if _cached(name):
            return name
        raise ModelSourceError(
            f"could not download {name!r}: HF_HUB_OFFLINE=1 is set and it is not in the local cache; unset it (with a "
            "network) or pass a local folder"
        )
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    url = f"{constants.ENDPOINT.rstrip('/')}/{name}/resolve/main/config.json"
    try:
        response = get_session().head(url, timeout=HUB_TIMEOUT_S, follow_redirects=False)
        status = response.status_code
    except Exception as error:  # connection refused, DNS, timeout, proxy: one attempt, no retries
        if _cached(name):
            logger.warning("The Hub cannot be reached (%s): using the cached copy of %r, offline", type(error).__name__, name)
            go_offline()
            return name
        raise ModelSourceError(
            f"could not download {name!r}: no network? set HF_HUB_OFFLINE=1 or pass a local folder "
            f"({type(error).__name__} from {constants.ENDPOINT})"
        ) from None
    if status in (401, 403, 404):
        raise ModelSourceError(
            f"{flag} {name}: no such local folder, and the Hub has no model {name!r} that you can read (HTTP {status}; "
            "a private or gated model needs `hf auth login`)"
        )
    return name
