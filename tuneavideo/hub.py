"""Hub policy: whether model ids may be fetched from the Hugging Face hub, decided once and passed down.

Nothing here imports ``huggingface_hub``: the policy is decided (a 2-second TCP probe at most) *before*
anything that reads the hub's environment variables is imported, because ``huggingface_hub`` copies
``HF_HUB_OFFLINE`` into a constant at import time. Loaders then get ``local_files_only`` explicitly.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_reachable(timeout: float = 2.0, host: str = "huggingface.co") -> bool:
    """Quick TCP probe of the hub (or ``HF_ENDPOINT``), so start-up never waits on minutes of retries."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{host}")
    hostname = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((hostname, 443), timeout=timeout):
            return True
    except OSError:
        return False


def is_hub_id(path_or_id: str) -> bool:
    """``owner/name`` that is not an existing local path."""
    text = str(path_or_id)
    parts = text.split("/")
    return not Path(text).expanduser().exists() and len(parts) == 2 and all(parts) and not text.startswith(".")


def go_offline() -> None:
    """Switch this process to offline mode, also when ``huggingface_hub`` was already imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # imported before the decision: its copy of the flag must follow
        constants.HF_HUB_OFFLINE = True


def decide_offline(model: str | None = None, timeout: float = 2.0) -> bool:
    """The process's hub policy: offline unless the hub answers (probed only when a hub id may be needed).

    Returns True (and switches the process offline) when the hub is unreachable or the user asked for it.
    """
    if hub_offline():
        go_offline()
        return True
    if model is not None and not is_hub_id(model):
        return False  # a local folder: no probe, nothing to decide
    if hub_reachable(timeout):
        return False
    go_offline()
    return True


def offline_hint(model: str) -> str:
    """The sentence that tells a user how to get ``model`` when the hub cannot be reached."""
    return (
        f"'{model}' is not in the local Hugging Face cache and the hub cannot be reached. Either run with network "
        f"access once, download it with `huggingface-cli download {model}` (or `hf download {model}`) on a machine "
        "that has it and copy the cache, pass --model with a local SD-1.x folder, or use the embedded toy-world "
        "model (`--model toy-world`, runs offline on a CPU)."
    )
