"""Each action through the pilot against a real `tunehub hub serve` subprocess and tiny
models: pull, quantize, publish, generate. Each test checks the screen and the files.

Actions run in the app's own workers (no daemon here); the daemon path has its own test.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.homes import Home
from tests.fixtures.tiny_models import TinyModels, base_repo_id, publish_base_repo
from tests.tui.conftest import make_app, screen_text, settle, wait_for
from tunehub.tui.widgets.definition_list import DefinitionList

pytestmark = pytest.mark.anyio

ARCH = "t2v_1.3B"
SETTINGS = {"prompt": "a red cat dances", "resolution": "32x32", "video_length": 5, "num_inference_steps": 2, "seed": 7}


@dataclass
class Hub:
    server: Any
    base_repo: str
    finetune_repo: str
    finetune: Path  # the tiny 16-bit original-layout transformer file

    @property
    def finetune_url(self) -> str:
        return f"{self.server.url}/{self.finetune_repo}/resolve/main/{self.finetune.name}"


@pytest.fixture(scope="module")
def hub(tiny_models: TinyModels, hub_server_session: Any) -> Iterator[Hub]:
    server = hub_server_session
    tag = "-" + uuid.uuid4().hex[:6]
    base = publish_base_repo(server, tiny_models.base_repo(ARCH), base_repo_id(ARCH, tag=tag))
    finetune = tiny_models.finetune(ARCH)["transformer"]
    finetune_repo = f"alice/tui-finetune{tag}"
    api = server.api()
    api.create_repo(finetune_repo)
    api.upload_file(path_or_fileobj=str(finetune), path_in_repo=finetune.name, repo_id=finetune_repo)
    yield Hub(server, base, finetune_repo, finetune)


@pytest.fixture
def action_home(home: Home, hub: Hub, monkeypatch: pytest.MonkeyPatch) -> Home:
    hub.server.use_in_process(monkeypatch)
    monkeypatch.setenv("TUNEHUB_NO_COMPILE", "1")
    home.write_config(f'endpoint = "{hub.server.url}"\n[base_repos]\n"{ARCH}" = "{hub.base_repo}"\n')
    return home


def _write_definition(home: Home, urls: list[str]) -> Path:
    return home.write_definition(
        "tiny_t2v", {"name": "Tiny T2V", "architecture": ARCH, "URLs": urls}, **SETTINGS
    )


def _state(app: Any) -> str:
    return next(r.state for r in app.screen.query_one(DefinitionList).rows if r.id == "tiny_t2v")


async def _select(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("slash", *"tiny_t2v", "enter")
    await pilot.pause()
    assert pilot.app.screen.query_one(DefinitionList).highlighted.id == "tiny_t2v"


async def test_pull_downloads_the_picked_file(action_home: Home, hub: Hub) -> None:
    _write_definition(action_home, [hub.finetune_url])
    app = make_app(action_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await _select(pilot)
        assert _state(app) == "missing"
        await pilot.press("s")  # 16-bit: the only file listed
        await pilot.press("p")
        target = action_home.ckpts / hub.finetune.name
        await wait_for(pilot, lambda: "pulled tiny_t2v" in screen_text(app), timeout=120, what="pull done")
        assert target.read_bytes() == hub.finetune.read_bytes()
        await settle(pilot)
        assert _state(app) == "published"  # every file listed is a Hub URL, and it is on disk
        assert "pull tiny_t2v" in screen_text(app)  # the jobs panel line


async def test_quantize_writes_the_int8_file_and_rewrites_the_definition(action_home: Home, hub: Hub) -> None:
    shutil.copy2(hub.finetune, action_home.ckpts / hub.finetune.name)
    path = _write_definition(action_home, [hub.finetune.name])
    app = make_app(action_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await _select(pilot)
        assert _state(app) == "present"  # one file listed: WanGP picks it whatever the preference
        await pilot.press("i")
        await wait_for(pilot, lambda: "quantize done" in screen_text(app), timeout=120, what="quantize done")
        urls = json.loads(path.read_text())["model"]["URLs"]
        assert len(urls) == 2 and "int8" in urls[1]
        assert (action_home.ckpts / urls[1]).is_file()
        await settle(pilot)
        assert _state(app) == "quantized"
        assert urls[1] in screen_text(app)  # the variant table shows the new file, picked


async def test_publish_asks_the_repo_uploads_and_rewrites(action_home: Home, hub: Hub) -> None:
    shutil.copy2(hub.finetune, action_home.ckpts / hub.finetune.name)
    path = _write_definition(action_home, [hub.finetune.name])
    repo = f"alice/tui-published-{uuid.uuid4().hex[:6]}"
    app = make_app(action_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await _select(pilot)
        await pilot.press("u")
        await wait_for(pilot, lambda: "Publish tiny_t2v" in screen_text(app), what="publish dialog")
        await pilot.press(*"not-a-repo", "enter")
        await wait_for(pilot, lambda: "must look like namespace/name" in screen_text(app), what="repo check")
        await pilot.press(*["backspace"] * 10, *repo, "enter")
        await wait_for(pilot, lambda: f"published tiny_t2v to {repo}" in screen_text(app), timeout=120, what="done")
        urls = json.loads(path.read_text())["model"]["URLs"]
        assert urls == [f"{hub.server.url}/{repo}/resolve/main/{hub.finetune.name}"]
        files = hub.server.api().list_repo_files(repo)
        assert hub.finetune.name in files
        await settle(pilot)
        assert _state(app) == "published"
        assert hub.server.write_token not in screen_text(app)


async def test_generate_form_runs_with_progress_and_shows_the_output(action_home: Home, hub: Hub) -> None:
    shutil.copy2(hub.finetune, action_home.ckpts / hub.finetune.name)
    _write_definition(action_home, [hub.finetune.name])
    app = make_app(action_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await _select(pilot)
        await pilot.press("s")  # 16-bit: no int8 file here
        await settle(pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: "Generate with Tiny T2V" in screen_text(app), what="form")
        text = screen_text(app)
        assert "a red cat dances" in text and "32x32" in text  # pre-filled from the definition
        seed = app.screen.query_one("#field-seed")
        seed.value = "11"
        steps = app.screen.query_one("#field-num_inference_steps")
        steps.value = "two"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: "Steps: 'two' is not a whole number" in screen_text(app), what="form error")
        steps.value = "2"
        await pilot.press("ctrl+g")

        def finished() -> bool:
            text = screen_text(app)
            return "Settings used:" in text or "generate failed" in text

        await wait_for(pilot, finished, timeout=300, what="generation done")
        text = screen_text(app)
        assert "generate failed" not in text, text
        videos = list(action_home.outputs_dir.glob("*.mp4")) if hasattr(action_home, "outputs_dir") else []
        videos = videos or list((action_home.root / "outputs").glob("*.mp4"))
        assert len(videos) == 1 and videos[0].stat().st_size > 0
        assert videos[0].name in text.replace("\n", "")
        exported = json.loads(videos[0].with_suffix(".json").read_text())
        assert exported["seed"] == 11 and exported["num_inference_steps"] == 2
        assert "seed: 11" in text
        bar = app.screen.query_one("#generate-progress")
        assert (bar.total, bar.progress) == (2, 2)  # one step of the bar per denoising step


async def test_generate_form_gpus_2_cfg_runs_through_the_gloo_driver(action_home: Home, hub: Hub) -> None:
    """GPUs=2 + Parallel=cfg on CPU: two spawned processes (gloo), one video, the plan shown."""
    shutil.copy2(hub.finetune, action_home.ckpts / hub.finetune.name)
    _write_definition(action_home, [hub.finetune.name])
    app = make_app(action_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await _select(pilot)
        await pilot.press("s")  # 16-bit: no int8 file here
        await settle(pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: "Generate with Tiny T2V" in screen_text(app), what="form")
        screen = app.screen
        screen.query_one("#field-guidance_scale").value = "5"  # CFG-parallel needs guidance on
        gpus = screen.query_one("#field-gpus")
        parallel = screen.query_one("#field-parallel")
        gpus.value = "zero"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: "must be a positive whole number or auto" in screen_text(app), what="gpus error")
        assert screen.job_key is None
        gpus.value = ""
        parallel.value = "cfg"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: "needs GPUs of 2 or more" in screen_text(app), what="parallel error")
        assert screen.job_key is None
        gpus.value = "2"
        await pilot.press("ctrl+g")
        assert screen.job_key is not None
        params = app.jobs[screen.job_key]["params"]
        assert (params["gpus"], params["parallel"]) == (2, "cfg")  # what a worker or the daemon gets
        assert "must be" not in str(screen.query_one("#generate-errors").render())

        def finished() -> bool:
            text = screen_text(app)
            return "Settings used:" in text or "generate failed" in text

        await wait_for(pilot, finished, timeout=300, what="generation done")
        text = screen_text(app)
        assert "generate failed" not in text, text
        assert "parallel: 2 processes (gloo): CFG-parallel x2" in text
        videos = list((action_home.root / "outputs").glob("*.mp4"))
        assert len(videos) == 1 and videos[0].stat().st_size > 0
        assert videos[0].name in text.replace("\n", "")
        bar = screen.query_one("#generate-progress")
        assert (bar.total, bar.progress) == (2, 2)


async def test_with_a_daemon_actions_become_its_jobs_and_the_screen_follows_events(
    action_home: Home, hub: Hub
) -> None:
    from tests.daemon.conftest import DaemonProcess

    _write_definition(action_home, [hub.finetune_url])
    config = (action_home.root / "tunehub.toml").read_text()
    # The daemon must only run what the TUI asks for.
    action_home.write_config(config + '[daemon]\npull = "none"\nquantize = "never"\n')
    daemon = DaemonProcess(action_home.root, env={**action_home.env(), **hub.server.env()})
    daemon.start()
    try:
        app = make_app(action_home, use_daemon=True)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: "daemon: actions are daemon jobs" in screen_text(app), what="daemon mode")
            await _select(pilot)
            await pilot.press("p")
            await wait_for(pilot, lambda: "pull done (daemon job" in screen_text(app), timeout=120, what="daemon job")
            assert (action_home.ckpts / hub.finetune.name).read_bytes() == hub.finetune.read_bytes()
            jobs = daemon.client.jobs()
            assert [(job["kind"], job["definition_id"]) for job in jobs] == [("pull", "tiny_t2v")]
            await settle(pilot)
            assert _state(app) == "published"
            daemon.stop()  # the daemon goes away: the app says so and runs actions itself again
            await wait_for(pilot, lambda: "local: actions run in this app" in screen_text(app), timeout=60, what="local")
    finally:
        daemon.stop()
