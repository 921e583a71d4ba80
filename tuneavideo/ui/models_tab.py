"""My models tab: the models made in this browser, kept across reloads and restarts, to pick or download.

The list of keys lives in the browser (``gr.BrowserState``, encrypted with a secret kept beside the run
store, so it survives an app restart); the models themselves are the engine's stored runs. A page load
adds every listed model that the store still holds to the new session, so Edit and Control offer them.
Only keys this browser made (or loaded) are listed: other users' runs in the shared store stay hidden.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import InputError
from .widgets import engine_errors, model_dropdown, session_id

MAX_REMEMBERED = 50  # keys kept per browser


def browser_secret(engine) -> str:
    """A secret kept beside the run store, so the browser's encrypted model list reads back after a restart."""
    path = Path(engine.store.root).parent / ".browser-secret"
    try:
        if not path.is_file():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip()
    except OSError:
        return secrets.token_hex(32)  # read-only cache dir: the list lasts until the app restarts


@dataclass
class ModelsTab:
    """The tab's components and the callbacks ``build_demo`` wires to tune / load / page load."""

    table: gr.Dataframe
    pick: gr.Dropdown
    outputs: list[Any]  # [my_keys, table, pick, *model dropdowns of the other tabs]
    remember: Any  # (handle, my_keys) -> outputs: add the session's newest model to the browser's list
    restore: Any  # (my_keys, handle) -> outputs: add the browser's models to a new session


def _rows(models: list[Any]) -> list[list[Any]]:
    rows = []
    for m in models:
        spec = m.video_spec
        size = f"{spec.num_frames} f · {spec.width}x{spec.height}" if spec else "?"
        steps = m.tune_config.max_train_steps if m.tune_config else ""
        rows.append([m.prompt, size, steps, m.source, m.origin_key[:12]])
    return rows


# Over 60 lines: Gradio layout code in page order, then the tab's callbacks as closures over its widgets.
def build_models_tab(engine, handle: gr.State, my_keys: gr.BrowserState, dropdowns: list[gr.Dropdown]) -> ModelsTab:
    """Build the My models tab; ``dropdowns`` (Edit's and Control's model pickers) get the same choices."""
    gr.Markdown(
        "Models you tuned or loaded **in this browser**, newest first. They stay listed after a reload, after "
        "closing the tab and after the app restarts, as long as the server keeps them (its disk budget may "
        "remove old ones). Pick one to use it in Edit and Control, or download it to keep it."
    )
    table = gr.Dataframe(headers=["prompt", "clip", "steps", "source", "key"], interactive=False,
                         elem_id="models-table", label="My models")  # fmt: skip
    with gr.Row():
        pick = model_dropdown(label="Model", elem_id="models-pick", scale=3)
        use_button = gr.Button("Use in Edit and Control", variant="primary", elem_id="models-use", scale=1)
        download_button = gr.Button("Download", elem_id="models-download", scale=1)
    note = gr.Markdown(elem_id="models-status")
    download = gr.File(label="Tuned weights (.zip: upload it in the Edit tab on any server)", interactive=False)
    outputs = [my_keys, table, pick, *dropdowns]

    def view(sid: str, keys: list[str], selected: str | None) -> tuple:
        models = list(reversed(engine.models(sid)))
        choices = [(m.label, m.tune_key) for m in models]
        value = selected if selected in {k for _, k in choices} else (choices[0][1] if choices else None)
        update = gr.update(choices=choices, value=value)
        return (keys, _rows(models), update, *[update for _ in dropdowns])

    def remember(handle: dict | None, keys: list[str] | None, request: gr.Request) -> tuple:
        key = (handle or {}).get("tune_key")
        keys = [k for k in (keys or []) if isinstance(k, str)]
        if key:
            keys = [key, *[k for k in keys if k != key]][:MAX_REMEMBERED]
        return view(session_id(request), keys, key)

    def restore(keys: list[str] | None, handle: dict | None, request: gr.Request) -> tuple:
        sid = session_id(request)
        kept = []
        for key in [k for k in (keys or []) if isinstance(k, str)][:MAX_REMEMBERED]:
            try:
                engine.adopt(sid, key)
            except InputError:
                continue  # gone from the store (disk budget) or from another base: drop it from the list
            kept.append(key)
        return view(sid, kept, (handle or {}).get("tune_key"))

    def use(key: str | None, handle: dict | None, request: gr.Request) -> tuple:
        """Add one of your stored models to this session and select it in Edit and Control."""
        with engine_errors("loading the model", request):
            model = engine.adopt(session_id(request), str(key or ""))
        update = gr.update(value=model.tune_key)
        text = f"Using {model.label}: go to **Edit** or **Control**."
        return text, {**(handle or {}), **model.handle}, *[update for _ in dropdowns]

    def download_model(key: str | None, request: gr.Request) -> str:
        """A zip of one of this session's models (weights, record, source frames, inversions)."""
        with engine_errors("packing the model", request):
            return str(engine.pack_model(session_id(request), str(key or "")))

    def list_models(request: gr.Request) -> list[dict[str, Any]]:
        """This session's models, newest first: tune_key (pass it as ``model``), made_by, label, prompt, ..."""
        return [m.as_dict() for m in reversed(engine.models(session_id(request)))]

    use_button.click(use, [pick, handle], [note, handle, *dropdowns], api_name="use_model", queue=False)
    download_button.click(download_model, [pick], download, api_name="download_model")
    with gr.Row(visible=False):
        models_json, models_button = gr.JSON(label="Models"), gr.Button("models")
    models_button.click(list_models, None, models_json, api_name="models", queue=False)
    return ModelsTab(table, pick, outputs, remember, restore)
