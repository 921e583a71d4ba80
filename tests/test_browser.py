"""The app in a real browser: headless Debian Chromium driven by Playwright's Python API.

Needs ``/usr/bin/chromium`` (``scripts/install_browser.sh``) and the ``playwright`` package; never
``playwright install`` (no downloads). Picks the built-in example, tunes, edits, saves a screenshot.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def app(make_engine, serve, tmp_path_factory: pytest.TempPathFactory):
    from tuneavideo.ui import build_demo

    engine = make_engine()
    return engine, serve(build_demo(engine))


def test_example_tune_and_edit_in_chromium(app, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    from tuneavideo.ui import example_dir
    from tuneavideo.ui.examples import load_examples

    engine, url = app
    example = load_examples(engine, fallback_dir=example_dir(engine))[0]  # the first example the page shows
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            expect(page.locator("#banner")).to_contain_text("Model:", timeout=30_000)

            page.get_by_text(example.name).first.click()  # the example fills the Tune (and Edit) inputs
            expect(page.get_by_label("Source prompt")).to_have_value(example.prompt)
            expect(page.locator("#tune-video video")).to_have_count(1, timeout=30_000)  # the clip has loaded
            page.locator("#tune-button").click()
            expect(page.locator("#tune-status")).to_contain_text("Tuned in", timeout=180_000)
            expect(page.locator("#tune-estimate")).to_contain_text("Estimate")

            page.get_by_role("tab", name="Edit").click()
            expect(page.locator("#edit-prompts textarea")).to_have_value("\n".join(example.edit_prompts))
            page.locator("#edit-button").click()
            expect(page.locator("#edit-status")).to_contain_text("tuning: cached", timeout=180_000)
            expect(page.locator("#edit-video video")).to_have_count(1, timeout=30_000)
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
        finally:
            browser.close()


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
    from playwright.sync_api import expect, sync_playwright

    from tuneavideo.ui import build_demo, example_dir
    from tuneavideo.ui.examples import load_examples

    engine = make_engine(model=str(TOY), model_kind="toy-world")
    url = serve(build_demo(engine))
    example = load_examples(engine, fallback_dir=example_dir(engine))[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            expect(page.locator("#banner")).to_contain_text("toy-world", timeout=30_000)
            page.get_by_text(example.name).first.click()
            expect(page.locator("#tune-video video")).to_have_count(1, timeout=30_000)
            steps = page.locator("input[aria-label='number input for Tuning steps']")
            steps.fill("4")
            steps.press("Enter")
            page.locator("#tune-button").click()
            expect(page.locator("#tune-status")).to_contain_text("Tuned in", timeout=180_000)

            page.get_by_role("tab", name="Control").click()
            expect(page.locator("#control-model input")).to_have_value(str(TOY_CONTROLNET))
            page.locator("#control-hint").get_by_text("depth", exact=True).click()
            expect(page.locator("#control-type input[value='t2i_adapter']")).to_be_checked()
            expect(page.locator("#control-model input")).to_have_value(str(TOY_ADAPTER))
            page.locator("#control-prompts textarea").fill("a yellow circle moving right on a blue background")
            sampling = page.locator("#control-steps input[type=number]")
            sampling.fill("10")
            sampling.press("Enter")
            page.locator("#control-button").click()
            expect(page.locator("#control-status")).to_contain_text(
                f"T2I-Adapter '{TOY_ADAPTER.name}' (depth)", timeout=180_000
            )
            expect(page.locator("#control-video video")).to_have_count(1, timeout=30_000)
            shot = tmp_path / "control-tab.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
