"""The app in a real browser: headless Debian Chromium driven by Playwright's Python API.

Needs ``/usr/bin/chromium`` (``scripts/install_browser.sh``) and the ``playwright`` package; never
``playwright install`` (no downloads). Picks the built-in example, tunes, edits, saves a screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]  # fmt: skip


def _skip_reason() -> str | None:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"{CHROMIUM} not found: run scripts/install_browser.sh (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright; no browser download needed)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))]


@contextmanager
def _page(url: str) -> Iterator[Any]:
    """A page of headless Chromium at ``url``; the browser is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            yield page
        finally:
            browser.close()


def _set_number(field: Any, value: str) -> None:
    """Type ``value`` into a Gradio number field and commit it (Gradio reads it on Enter or blur)."""
    field.fill(value)
    field.press("Enter")


@pytest.fixture(scope="module")
def app(make_engine, serve, tmp_path_factory: pytest.TempPathFactory):
    from tuneavideo.ui import build_demo

    engine = make_engine()
    return engine, serve(build_demo(engine))


def test_example_tune_and_edit_in_chromium(app, tmp_path: Path):
    from playwright.sync_api import expect

    from tuneavideo.ui import example_dir
    from tuneavideo.ui.examples import load_examples

    engine, url = app
    example = load_examples(engine, fallback_dir=example_dir(engine))[0]  # the first example the page shows
    with _page(url) as page:
        expect(page.locator("#banner")).to_contain_text("Model:", timeout=30_000)

        page.get_by_text(example.name).first.click()  # the example fills the Tune (and Edit) inputs
        expect(page.get_by_label("Source prompt")).to_have_value(example.prompt, timeout=30_000)
        expect(page.locator("#tune-video video")).to_have_count(1, timeout=30_000)  # the clip has loaded
        page.locator("#tune-button").click()
        expect(page.locator("#tune-status")).to_contain_text("Tuned in", timeout=180_000)
        expect(page.locator("#tune-estimate")).to_contain_text("Estimate", timeout=30_000)

        page.get_by_role("tab", name="Edit").click()
        expect(page.locator("#edit-prompts textarea")).to_have_value("\n".join(example.edit_prompts), timeout=30_000)
        page.locator("#edit-button").click()
        expect(page.locator("#edit-status")).to_contain_text("tuning: cached", timeout=180_000)
        expect(page.locator("#edit-gallery video")).to_have_count(len(example.edit_prompts), timeout=30_000)
        shot = tmp_path / "edit-tab.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        sessions = set(engine.sessions())
        assert len(sessions) == 1
        page.close()  # closing the tab ends the session: demo.unload releases it
        deadline = time.time() + 30
        while engine.sessions() and time.time() < deadline:
            time.sleep(0.2)
        assert engine.sessions() == []


ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "models" / "toy-world"
TOY_CONTROLNET = ROOT / "models" / "toy-world-controlnet-canny"
TOY_ADAPTER = ROOT / "models" / "toy-world-t2i-adapter-depth"


@pytest.mark.skipif(
    not all((d / n).is_file() for d, n in ((TOY, "model_index.json"), (TOY_CONTROLNET, "config.json"),
                                            (TOY_ADAPTER, "config.json"))),
    reason="the toy-world model and its control models are not in this checkout",
)  # fmt: skip
def test_toy_world_control_tab_in_chromium(make_engine, serve, tmp_path: Path):
    """Offline user on the embedded model: toy example -> tune -> Control tab, which offers the toy world's
    ControlNet; picking the depth hint switches to its T2I-Adapter; the result and the hint video appear."""
    from playwright.sync_api import expect

    from tuneavideo.ui import build_demo, example_dir
    from tuneavideo.ui.examples import load_examples

    engine = make_engine(model=str(TOY), model_kind="toy-world")
    url = serve(build_demo(engine))
    example = load_examples(engine, fallback_dir=example_dir(engine))[0]
    with _page(url) as page:
        expect(page.locator("#banner")).to_contain_text("toy-world", timeout=30_000)
        page.get_by_text(example.name).first.click()
        expect(page.locator("#tune-video video")).to_have_count(1, timeout=30_000)
        steps = page.locator("input[aria-label='number input for Tuning steps']")
        _set_number(steps, "4")
        page.locator("#tune-button").click()
        expect(page.locator("#tune-status")).to_contain_text("Tuned in", timeout=180_000)

        page.get_by_role("tab", name="Control").click()
        expect(page.locator("#control-model input")).to_have_value(str(TOY_CONTROLNET), timeout=30_000)
        page.locator("#control-hint").get_by_text("depth", exact=True).click()
        expect(page.locator("#control-type input[value='t2i_adapter']")).to_be_checked(timeout=30_000)
        expect(page.locator("#control-model input")).to_have_value(str(TOY_ADAPTER), timeout=30_000)
        page.locator("#control-prompts textarea").fill("a yellow circle moving right on a blue background")
        sampling = page.locator("#control-steps input[type=number]")
        _set_number(sampling, "10")
        page.locator("#control-button").click()
        expect(page.locator("#control-status")).to_contain_text(
            f"T2I-Adapter '{TOY_ADAPTER.name}' (depth)", timeout=180_000
        )
        expect(page.locator("#control-video video")).to_have_count(1, timeout=30_000)
        shot = tmp_path / "control-tab.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000


def _shot(page, tmp_path: Path, name: str) -> Path:
    """A screenshot in ``tmp_path`` (and, with ``SCREENSHOT_DIR`` set, a small copy there for the README)."""
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    out = os.environ.get("SCREENSHOT_DIR")
    if out:
        from PIL import Image

        img = Image.open(shot).convert("RGB")
        img.thumbnail((900, 1400))
        Path(out).mkdir(parents=True, exist_ok=True)
        img.quantize(colors=128).save(Path(out) / f"{name}.png", optimize=True)
    return shot


def test_results_stay_models_persist_edits_show_and_cancel_state(app, tmp_path: Path):
    """Issue 17 in the browser: Cancel's state, a two-prompt edit shows both videos, an error keeps the
    earlier results (its message beside the button), and a tuned model survives a page reload."""
    from playwright.sync_api import expect

    from tuneavideo.ui import example_dir
    from tuneavideo.ui.examples import load_examples

    engine, url = app
    example = load_examples(engine, fallback_dir=example_dir(engine))[0]
    with _page(url) as page:
        expect(page.locator("#base-card")).to_contain_text("Native size", timeout=30_000)
        expect(page.locator("#tune-cancel")).to_be_disabled(timeout=30_000)  # nothing runs yet
        page.get_by_text(example.name).first.click()
        expect(page.locator("#tune-video video")).to_have_count(1, timeout=30_000)

        # a long tune: Cancel is enabled while it runs, stops it, and is disabled again
        steps = page.locator("input[aria-label='number input for Tuning steps']")
        _set_number(steps, "400")
        page.locator("#tune-button").click()
        expect(page.locator("#tune-cancel")).to_be_enabled(timeout=30_000)
        expect(page.locator("#tune-progress")).to_contain_text("Tuning", timeout=60_000)
        page.locator("#tune-cancel").click()
        expect(page.locator("#tune-status")).to_contain_text("Cancel", timeout=60_000)
        expect(page.locator("#tune-cancel")).to_be_disabled(timeout=30_000)
        # once the job has ended, the status says so (not "Cancelling…" forever)
        expect(page.locator("#tune-status")).to_contain_text("Tuning stopped.", timeout=60_000)

        _set_number(steps, "2")
        page.locator("#tune-button").click()
        expect(page.locator("#tune-status")).to_contain_text("Key", timeout=180_000)  # tuned, or a cache hit
        expect(page.locator("#tune-video video")).to_have_count(1, timeout=30_000)  # the inputs stay as they were
        _shot(page, tmp_path, "tune")

        page.get_by_role("tab", name="Edit").click()
        expect(page.locator("#edit-model input")).to_have_value(
            re.compile(re.escape(example.prompt[:20])), timeout=30_000
        )
        page.locator("#edit-prompts textarea").fill("a blue square moves right\na green square moves right")
        page.locator("#edit-button").click()
        expect(page.locator("#edit-status")).to_contain_text("tuning: cached", timeout=180_000)
        expect(page.locator("#edit-gallery video")).to_have_count(2, timeout=30_000)  # one player per prompt
        expect(page.locator("#edit-scores")).to_contain_text("Scores", timeout=30_000)

        page.locator("#edit-prompts textarea").fill("")  # an input error: earlier results stay
        page.locator("#edit-button").click()
        expect(page.locator("#edit-error")).to_contain_text("Could not run", timeout=30_000)
        expect(page.locator("#edit-gallery video")).to_have_count(2, timeout=30_000)
        expect(page.locator("#edit-status")).to_contain_text("tuning: cached", timeout=30_000)
        expect(page.locator("#edit-cancel")).to_be_disabled(timeout=30_000)
        _shot(page, tmp_path, "edit")

        page.get_by_role("tab", name="Control").click()
        expect(page.locator("#control-model-pick input")).to_have_value(
            re.compile(re.escape(example.prompt[:20])), timeout=30_000
        )
        _shot(page, tmp_path, "control")
        page.get_by_role("tab", name="About").click()
        _shot(page, tmp_path, "about")

        page.reload()  # a new session: the model comes back from the browser's list and the run store
        expect(page.locator("#base-card")).to_contain_text("Native size", timeout=30_000)
        page.get_by_role("tab", name="My models").click()
        expect(page.locator("#models-table")).to_contain_text(example.prompt, timeout=30_000)
        restored = [m for sid in engine.sessions() for m in engine.models(sid)]
        assert example.prompt in {m.prompt for m in restored}  # the new session can edit with it
        _shot(page, tmp_path, "my-models")
