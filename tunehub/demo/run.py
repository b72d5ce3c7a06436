"""``tunehub demo``: the whole flow on this machine, offline, with tiny generated models.

1. start ``tunehub hub serve`` on a free loopback port, in a temporary folder;
2. build a tiny Wan 2.1 t2v 1.3B base repo (diffusers layout) and a tiny finetune file
   (original Wan layout, 16-bit), deterministically (:mod:`tunehub.demo.tiny`);
3. publish the base repo, and a "community" repo holding the finetune's 16-bit file and
   its definition (``finetunes/<id>.json``, ``auto_quantize: true``);
4. write a tunehub home subscribed to that repo (``[[remote]]``), with
   ``[daemon] pull = "all"``, ``quantize = "auto"``, ``publish = "<user>/<repo>"`` and
   ``[base_repos]`` pointing at the tiny base repo;
5. start ``tunehub daemon`` for it and wait while it fetches the definition, pulls and
   verifies the 16-bit file, quantizes it to int8, publishes it and rewrites the
   definition's local file names into URLs;
6. ``tunehub generate`` one short video with the int8 model;
7. print a table of the steps (time, bytes) and where the video and the rewritten
   definition are.

Every child (server, daemon, generate) is a subprocess in its own process group; the
groups are terminated in a ``finally`` (SIGTERM, then SIGKILL after a few seconds), so
Ctrl-C at any point stops the demo within 10 s and leaves no process behind. With
``keep=True`` the server and the daemon are left running on success, and the commands
to use and stop them are printed. Tokens are never printed: they are in files (0600).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from tunehub.errors import TunehubError

ARCHITECTURE = "t2v_1.3B"
DEFINITION_ID = "t2v_1.3B_tiny_demo"
DEMO_USER = "demo"  # the daemon's user: owns the publish repo
COMMUNITY_USER = "community"  # shares finetune definitions
BASE_USER = "wan-ai"  # owns the base model repo
BASE_REPO = f"{BASE_USER}/tiny-wan2.1-t2v-1.3b-diffusers"
COMMUNITY_REPO = f"{COMMUNITY_USER}/wan-finetunes"
PUBLISH_REPO = f"{DEMO_USER}/wan-finetunes-int8"
FINETUNE_SEED = 101
BASE_SEED = 1

# Step timeouts (seconds): generous for a loaded machine; the demo normally takes ~30 s.
START_TIMEOUT = 60.0
SYNC_TIMEOUT = 180.0
GENERATE_TIMEOUT = 300.0
INTERRUPTED = 130  # exit status after SIGINT / SIGTERM
STOP_GRACE = 5.0  # SIGTERM -> SIGKILL; the daemon's own stop budget is 6 s, ours must stay < 10 s


class DemoError(TunehubError, RuntimeError):
    """A demo step failed; ``step`` names it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


class DemoInterrupted(BaseException):
    """SIGTERM received (SIGINT raises KeyboardInterrupt)."""


@dataclass
class Step:
    name: str
    seconds: float | None = None
    bytes: int | None = None
    detail: str = ""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class DemoResult:
    workdir: Path
    home: Path
    steps: list[Step] = field(default_factory=list)
    video: Path | None = None
    definition: Path | None = None
    endpoint: str = ""
    wall: float = 0.0
    failed: DemoError | None = None


def _human(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tunehub_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tunehub", *args]


class Demo:
    """One run of the demo. ``run()`` returns the process exit status."""

    def __init__(
        self,
        *,
        keep: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.keep = keep
        self.device = device
        self.out = out or sys.stdout
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tunehub-demo-"))
        self.workdir = base.resolve()
        self.hub_root = self.workdir / "hub"
        self.home = self.workdir / "home"
        self.build_dir = self.workdir / "build"
        self.logs = self.workdir / "logs"
        self.hf_home = self.workdir / "hf-home"
        self.token_file = self.workdir / "demo.token"
        self.children: list[Child] = []
        self.result = DemoResult(workdir=self.workdir, home=self.home)
        self.t0 = time.monotonic()
        self.endpoint = ""
        self._tokens: dict[str, str] = {}
        self._daemon: Child | None = None
        self._deferring = False
        self._pending_signal: int | None = None

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _record(self, step: Step) -> Step:
        self.result.steps.append(step)
        size = f"  {_human(step.bytes)}" if step.bytes is not None else ""
        timing = f"{step.seconds:6.1f}s" if step.seconds is not None else "       "
        self.say(f"  [{timing}] {step.name}{size}{('  ' + step.detail) if step.detail else ''}")
        return step

    # ------------------------------------------------------------------ processes

    def _child_env(self, token: str | None = None) -> dict[str, str]:
        # The user's Hub settings (endpoint, token, offline mode, cache) must not leak into the demo.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE_"))}
        for key in ("TUNEHUB_HOME", "TUNEHUB_HUB_ROOT", "TRANSFORMERS_OFFLINE"):
            env.pop(key, None)
        env.update(_no_proxy_for_loopback(env))
        env.update(
            PYTHONUNBUFFERED="1",
            HF_HOME=str(self.hf_home),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            TUNEHUB_NO_COMPILE="1",
        )
        if self.endpoint:
            env["HF_ENDPOINT"] = self.endpoint
        if token:
            env["HF_TOKEN"] = token
        return env

    def _spawn(self, name: str, command: list[str], env: dict[str, str], stdout: Any = None) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        self._deferring = True
        try:
            with open(log, "ab") as handle:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout if stdout is not None else handle,
                    stderr=handle,
                    env=env,
                    cwd=str(self.workdir),
                    start_new_session=True,  # its own process group: we stop it and everything it starts
                )
            child = Child(name, process, log)
            self.children.append(child)
        finally:
            self._deferring = False
        pending, self._pending_signal = self._pending_signal, None
        if pending is not None:
            self._on_signal(pending, None)
        return child

    def stop_children(self, children: list[Child] | None = None) -> None:
        """SIGTERM each child's process group, wait up to STOP_GRACE s in all, then SIGKILL."""
        children = list(self.children if children is None else children)
        for child in children:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in children:
            # the group may outlive its leader (threads are fine; stray processes are not)
            _signal_group(child.pid, signal.SIGKILL)
            try:
                child.process.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
            if child in self.children:
                self.children.remove(child)

    def _log_tail(self, child: Child, lines: int = 15) -> str:
        try:
            text = child.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        token_values = [t for t in self._tokens.values() if t]
        tail = "\n".join(text[-lines:])
        for token in token_values:
            tail = tail.replace(token, "hf_***")
        return tail

    # ------------------------------------------------------------------ run

    def _on_signal(self, signum: int, frame: Any) -> None:
        # While a child is being spawned the signal waits (so no child escapes the list).
        if self._deferring:
            self._pending_signal = signum
            return
        raise KeyboardInterrupt() if signum == signal.SIGINT else DemoInterrupted()

    def run(self) -> int:
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        success = False
        try:
            self.say(f"tunehub demo in {self.workdir}")
            self._run_steps()
            success = True
        except DemoError as exc:
            self.result.failed = exc
        except (KeyboardInterrupt, DemoInterrupted):
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.say("interrupted: stopping the demo's processes ...")
            self.stop_children()
            self.say(f"stopped; files are in {self.workdir}")
            return INTERRUPTED
        finally:
            if not (success and self.keep):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                self.stop_children()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.result.wall = time.monotonic() - self.t0
        self.print_summary()
        return 0 if success else 1

    def _timed(self, name: str, function: Callable[[], tuple[int | None, str]], start: float | None = None) -> Step:
        """Run one step; its time counts from ``start`` (default: now)."""
        start = time.monotonic() if start is None else start
        try:
            size, detail = function()
        except DemoError:
            raise
        except (KeyboardInterrupt, DemoInterrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure becomes "step X failed: ..."
            message = str(exc) or type(exc).__name__
            for token in self._tokens.values():
                message = message.replace(token, "hf_***")
            raise DemoError(name, f"{type(exc).__name__}: {message}") from exc
        return self._record(Step(name, time.monotonic() - start, size, detail))

    def _run_steps(self) -> None:
        for folder in (self.hub_root, self.home, self.build_dir, self.logs, self.hf_home):
            folder.mkdir(parents=True, exist_ok=True)
        self.say("")
        # The server starts (a subprocess) while the tiny models are built here.
        server = self._spawn("hub-server", _tunehub_command("hub", "serve", "--root", str(self.hub_root), "--port", "0"),
                             self._child_env())  # fmt: skip
        started = time.monotonic()
        watch = _Background(lambda: self._probe_server(server, started + START_TIMEOUT))
        self._timed("build tiny models (Wan t2v 1.3B base repo + 16-bit finetune)", self._build_models)
        step = self._timed("start hub server (during the build)", lambda: self._wait_server(watch), start=started)
        step.seconds = (watch.finished_at or time.monotonic()) - started
        self._timed(f"publish base repo {BASE_REPO}", self._publish_base)
        self._timed(f"publish community repo {COMMUNITY_REPO}", self._publish_community)
        self._write_home()
        daemon_started = time.monotonic()
        self._daemon = self._spawn(
            "daemon", _tunehub_command("--home", str(self.home), "daemon"), self._child_env(self._tokens[DEMO_USER])
        )
        self._timed("start daemon", lambda: self._wait_daemon_ready(self._daemon, daemon_started), start=daemon_started)
        self._sync_steps()
        self._timed("generate a video (tunehub generate)", self._generate)

    # ------------------------------------------------------------------ steps

    def _build_models(self) -> tuple[int, str]:
        try:
            import diffusers  # noqa: F401
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            raise DemoError(
                "build tiny models", f"{exc}: the demo needs the full install: pip install -e '.[all]' (or 'tunehub[all]')"
            ) from None
        _quiet_libraries()
        from tunehub.demo import tiny

        base = tiny.build_base_repo(ARCHITECTURE, self.build_dir / "base", seed=BASE_SEED)
        files = tiny.write_finetune(ARCHITECTURE, self.build_dir / "finetune", seed=FINETUNE_SEED)
        self.base_folder = base
        self.finetune_file = files["transformer"]
        return _tree_bytes(base) + _tree_bytes(self.finetune_file), ""

    def _probe_server(self, server: Child, deadline: float) -> str:
        """The server's URL once it answers /api/health (runs in a thread during the build)."""
        url = ""
        while not url:
            try:
                for line in server.log.read_text(errors="replace").splitlines():
                    if line.startswith("HF_ENDPOINT="):
                        url = line.split("=", 1)[1].strip()
            except FileNotFoundError:
                pass
            if url:
                break
            if server.process.poll() is not None:
                raise DemoError("start hub server", f"`tunehub hub serve` exited with {server.process.returncode}:\n{self._log_tail(server)}")
            if time.monotonic() > deadline:
                raise DemoError("start hub server", f"no URL after {START_TIMEOUT:.0f}s; log: {server.log}")
            time.sleep(0.05)
        import urllib.error
        import urllib.request

        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        while True:
            try:
                with direct.open(f"{url}/api/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if server.process.poll() is not None:
                raise DemoError("start hub server", f"`tunehub hub serve` exited with {server.process.returncode}:\n{self._log_tail(server)}")
            if time.monotonic() > deadline:
                raise DemoError("start hub server", f"{url} not healthy after {START_TIMEOUT:.0f}s; log: {server.log}")
            time.sleep(0.05)
        return url

    def _wait_server(self, watch: _Background) -> tuple[None, str]:
        url = watch.result()
        self.endpoint = url
        self.result.endpoint = url
        # users and tokens (written to the server's store directly, as `tunehub hub token add` does)
        from tunehub.hub.server.storage import HubStore

        store = HubStore(str(self.hub_root))
        try:
            for user in (BASE_USER, COMMUNITY_USER, DEMO_USER):
                self._tokens[user] = store.add_token(user, write=True, name="tunehub-demo")
        finally:
            store.close()
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._tokens[DEMO_USER] + "\n")
        return None, url

    def _api(self, user: str) -> Any:
        os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
        os.environ.update(_no_proxy_for_loopback(os.environ))
        import huggingface_hub.constants as constants
        from huggingface_hub import HfApi

        constants.HF_HUB_DISABLE_XET = True  # the bundled server speaks plain LFS, not Xet
        constants.HF_HUB_OFFLINE = False  # the demo's Hub is on this machine
        return HfApi(endpoint=self.endpoint, token=self._tokens[user])

    def _publish_base(self) -> tuple[int, str]:
        api = self._api(BASE_USER)
        api.create_repo(BASE_REPO, exist_ok=True)
        api.upload_folder(repo_id=BASE_REPO, folder_path=str(self.base_folder), commit_message="tiny Wan 2.1 t2v 1.3B (diffusers layout)")
        return _tree_bytes(self.base_folder), f"{self.endpoint}/{BASE_REPO}"

    def _definition(self) -> dict[str, Any]:
        url = f"{self.endpoint}/{COMMUNITY_REPO}/resolve/main/{self.finetune_file.name}"
        return {
            "prompt": "a red cat dances in the city at night",
            "resolution": "32x32",
            "video_length": 5,
            "num_inference_steps": 2,
            "seed": 7,
            "model": {
                "name": "Tiny Wan 1.3B demo finetune",
                "architecture": ARCHITECTURE,
                "description": "A tiny random finetune made by `tunehub demo`.",
                "URLs": [url],
                "auto_quantize": True,
            },
        }

    def _publish_community(self) -> tuple[int, str]:
        from huggingface_hub import CommitOperationAdd

        api = self._api(COMMUNITY_USER)
        api.create_repo(COMMUNITY_REPO, exist_ok=True)
        definition = json.dumps(self._definition(), indent=4).encode()
        api.create_commit(
            repo_id=COMMUNITY_REPO,
            operations=[
                CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=b"# Wan finetunes (tunehub demo)\n"),
                CommitOperationAdd(path_in_repo=self.finetune_file.name, path_or_fileobj=str(self.finetune_file)),
                CommitOperationAdd(path_in_repo=f"finetunes/{DEFINITION_ID}.json", path_or_fileobj=definition),
            ],
            commit_message=f"add {DEFINITION_ID}",
        )
        return self.finetune_file.stat().st_size + len(definition), f"finetunes/{DEFINITION_ID}.json + 16-bit file"

    def _write_home(self) -> None:
        toml = "\n".join(
            [
                "# written by `tunehub demo`",
                f'endpoint = "{self.endpoint}"',
                'quantization = "int8"',
                "",
                "[[remote]]",
                f'repo = "{COMMUNITY_REPO}"',
                'path = "finetunes"',
                'interval = "1s"',
                "",
                "[daemon]",
                'pull = "all"',
                'quantize = "auto"',
                f'publish = "{PUBLISH_REPO}"',
                'retry_base = "1s"',
                "",
                "[base_repos]",
                f'"{ARCHITECTURE}" = "{BASE_REPO}"',
                "",
            ]
        )
        (self.home / "tunehub.toml").write_text(toml, encoding="utf-8")

    def _wait_daemon_ready(self, daemon: Child, started: float) -> tuple[None, str]:
        from tunehub.daemon.client import DaemonClient

        client = DaemonClient(self.home, timeout=10)
        while True:
            if daemon.process.poll() is not None:
                raise DemoError("start daemon", f"`tunehub daemon` exited with {daemon.process.returncode}:\n{self._log_tail(daemon)}")
            try:
                if client.health().get("ok"):
                    return None, f"pid {daemon.pid}"
            except TunehubError:
                pass
            if time.monotonic() - started > START_TIMEOUT:
                raise DemoError("start daemon", f"no answer on its socket after {START_TIMEOUT:.0f}s; log: {daemon.log}")
            time.sleep(0.05)

    def _sync_steps(self) -> None:
        """Wait until the daemon has the definition ready (pulled, int8, published, URLs)."""
        from tunehub.daemon.client import DaemonClient

        assert self._daemon is not None
        daemon = self._daemon
        client = DaemonClient(self.home, timeout=10)
        start = time.monotonic()
        seen_at: float | None = None
        working = self.home / "remote" / COMMUNITY_REPO.replace("/", "--") / f"{DEFINITION_ID}.json"
        step = "fetch definition from the remote"
        entry: dict[str, Any] | None = None
        while True:
            if daemon.process.poll() is not None:
                raise DemoError(step, f"the daemon exited with {daemon.process.returncode}:\n{self._log_tail(daemon)}")
            try:
                status = client.status()
            except TunehubError as exc:  # a busy daemon may miss one answer: try again until the timeout
                if time.monotonic() - start > SYNC_TIMEOUT:
                    raise DemoError(step, f"{exc}") from None
                time.sleep(0.5)
                continue
            entry = next((e for e in status.get("definitions", []) if e.get("id") == DEFINITION_ID), None)
            if entry is not None and seen_at is None:
                seen_at = time.monotonic()
                self._record(Step(step, seen_at - start, _tree_bytes(working) if working.exists() else None,
                                  f"{working.relative_to(self.workdir)}"))  # fmt: skip
                step = "daemon: pull, quantize, publish, rewrite"
            for remote in status.get("remotes", []):
                if remote.get("failures") and remote.get("last_error") and seen_at is None and time.monotonic() - start > 20:
                    raise DemoError(step, f"remote {remote.get('repo')}: {remote['last_error']}")
            if entry is not None:
                if entry.get("state") == "failed":
                    raise DemoError(self._failed_job_step(client), f"{entry.get('error') or entry}\n{self._log_tail(daemon)}")
                if entry.get("state") == "ready" and entry.get("needs") == [] and self._rewritten(working):
                    break
            failed = [j for j in status.get("jobs", []) if j.get("state") == "failed"]
            if failed:
                job = failed[0]
                raise DemoError(f"daemon: {job['kind']}", f"{job.get('last_error')}\n{self._log_tail(daemon)}")
            if time.monotonic() - start > SYNC_TIMEOUT:
                raise DemoError(step, f"not done after {SYNC_TIMEOUT:.0f}s; last state: {entry}; log: {daemon.log}")
            time.sleep(0.1)
        done_at = time.monotonic()
        jobs = {j["kind"]: j for j in reversed(client.jobs()) if j.get("definition_id") == DEFINITION_ID}
        urls = json.loads(working.read_text(encoding="utf-8"))["model"]["URLs"]
        names = [url.rsplit("/", 1)[-1] for url in urls]
        ckpts = self.home / "ckpts"
        sizes = {name: (ckpts / name).stat().st_size for name in names if (ckpts / name).is_file()}
        int8_name = next((name for name in names if "int8" in name), "?")
        bf16_name = self.finetune_file.name

        def job_seconds(kind: str) -> float | None:
            job = jobs.get(kind)
            if not job or not job.get("started") or not job.get("finished"):
                return None
            return float(job["finished"]) - float(job["started"])

        self._record(Step("daemon: pull + verify sha256 (16-bit)", job_seconds("pull"), sizes.get(bf16_name), bf16_name))
        self._record(Step("daemon: quantize to int8 (streaming)", job_seconds("quantize"), sizes.get(int8_name), int8_name))
        self._record(
            Step(f"daemon: publish to {PUBLISH_REPO}, rewrite to URLs", job_seconds("publish"), self._published_bytes(jobs),
                 f"{len(urls)} URLs in the definition")  # fmt: skip
        )
        self._record(Step("daemon: total, fetch to synced", done_at - start, None, ""))
        self.result.definition = working

    def _failed_job_step(self, client: Any) -> str:
        try:
            for job in client.jobs():
                if job.get("state") == "failed":
                    return f"daemon: {job['kind']}"
        except TunehubError:
            pass
        return "daemon: pull, quantize, publish, rewrite"

    def _rewritten(self, working: Path) -> bool:
        try:
            data = json.loads(working.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        urls = (data.get("model") or {}).get("URLs") or []
        return len(urls) >= 2 and all(isinstance(u, str) and u.startswith(self.endpoint + "/") for u in urls)

    def _published_bytes(self, jobs: dict[str, dict[str, Any]]) -> int | None:
        """Bytes the publish job uploaded (its result), else the size of the publish repo."""
        result = (jobs.get("publish") or {}).get("result")
        if isinstance(result, dict) and isinstance(result.get("bytes_uploaded"), int):
            return int(result["bytes_uploaded"])
        try:
            api = self._api(DEMO_USER)
            return sum(getattr(item, "size", 0) or 0 for item in api.list_repo_tree(PUBLISH_REPO, recursive=True)
                       if not str(getattr(item, "path", "")).endswith("/"))  # fmt: skip
        except Exception:  # noqa: BLE001 - only a number for the table
            return None

    def _generate(self) -> tuple[int, str]:
        out = self.home / "outputs" / "demo.mp4"
        command = _tunehub_command("--home", str(self.home), "generate", DEFINITION_ID, "--out", str(out), "--json")
        if self.device:
            command += ["--device", self.device]
        child = self._spawn("generate", command, self._child_env(self._tokens[DEMO_USER]), stdout=subprocess.PIPE)
        try:
            stdout, _ = child.process.communicate(timeout=GENERATE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoError("generate a video (tunehub generate)", f"not done after {GENERATE_TIMEOUT:.0f}s; log: {child.log}") from None
        finally:
            if child.process.poll() is not None and child in self.children:
                _signal_group(child.pid, signal.SIGKILL)
                self.children.remove(child)
        if child.process.returncode != 0:
            raise DemoError("generate a video (tunehub generate)", f"exit status {child.process.returncode}:\n{self._log_tail(child)}")
        result = _last_json_object(stdout.decode(errors="replace"))
        video = Path(result.get("video") or out)
        if not video.is_file() or video.stat().st_size == 0:
            raise DemoError("generate a video (tunehub generate)", f"no video at {video}")
        self.result.video = video
        files = [Path(p).name for p in result.get("transformer_files", [])]
        detail = (
            f"{result.get('frames', '?')} frames {result.get('width', '?')}x{result.get('height', '?')} "
            f"on {result.get('device', '?')} with {', '.join(files) or '?'}"
        )
        return video.stat().st_size, detail

    # ------------------------------------------------------------------ summary

    def print_summary(self) -> None:
        r = self.result
        rows = [("step", "time", "bytes", "")] + [
            (s.name, f"{s.seconds:.1f}s" if s.seconds is not None else "", _human(s.bytes), s.detail) for s in r.steps
        ]
        if r.failed is not None:
            rows.append((f"FAILED: {r.failed.step}", "", "", ""))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        self.say("")
        for index, row in enumerate(rows):
            self.say(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip())
            if index == 0:
                self.say("-" * (sum(widths) + 4))
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        self.say(f"{'total':<{widths[0]}}  {r.wall:>{widths[1] - 1}.1f}s  (load average {load})")
        self.say("")
        if r.failed is not None:
            self.say(f"error: {r.failed}")
            self.say(f"logs: {self.logs}")
            return
        self.say(f"video:      {r.video}")
        self.say(f"definition: {r.definition}")
        self.say(f"            (URLs of the demo server {r.endpoint})")
        if not self.keep:
            self.say(f"files:      {self.workdir}  (remove it when done: rm -rf {shlex.quote(str(self.workdir))})")
            return
        self._print_keep_instructions()

    def _print_keep_instructions(self) -> None:
        groups = " ".join(f"-{c.pid}" for c in self.children)
        env = (
            f"HF_ENDPOINT={self.endpoint} HF_HUB_DISABLE_XET=1 HF_HOME={shlex.quote(str(self.hf_home))} "
            f'HF_TOKEN="$(cat {shlex.quote(str(self.token_file))})"'
        )
        home = shlex.quote(str(self.home))
        self.say("")
        self.say("The Hub server and the daemon keep running (--keep):")
        for child in self.children:
            self.say(f"  {child.name}: pid {child.pid}, log {child.log}")
        self.say(f"  the demo user's token is in {self.token_file} (mode 0600)")
        self.say("Open the TUI on the demo home (it follows the daemon):")
        self.say(f"  {env} tunehub --home {home} tui")
        self.say("See what the daemon does:")
        self.say(f"  tunehub --home {home} status")
        self.say("Stop both:")
        self.say(f"  kill -TERM -- {groups}")


def _last_json_object(text: str) -> dict[str, Any]:
    """The JSON object `--json` prints last, even if a library printed something before it."""
    for start in [0] + [i + 1 for i in range(len(text)) if text[i] == "\n" and text[i + 1 : i + 2] == "{"][::-1]:
        try:
            value = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _no_proxy_for_loopback(env: Any) -> dict[str, str]:
    """NO_PROXY / no_proxy with the loopback names added: the demo's traffic never goes to a proxy."""
    return {
        key: ",".join(filter(None, [env.get(key, ""), "127.0.0.1", "localhost"]))
        for key in ("NO_PROXY", "no_proxy")
    }


class _Background:
    """Run ``function`` in a daemon thread; ``result()`` waits (interruptibly) and re-raises."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._function = function
        self._value: Any = None
        self._error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="tunehub-demo-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._function()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._error = exc
        finally:
            self.finished_at = time.monotonic()

    def result(self) -> Any:
        while self._thread.is_alive():
            self._thread.join(0.1)  # short joins: Ctrl-C stays responsive
        if self._error is not None:
            raise self._error
        return self._value


def _quiet_libraries() -> None:
    """No progress bars or advisory warnings from the libraries the demo uses in-process."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    try:
        import diffusers.utils.logging as diffusers_logging
        import transformers.utils.logging as transformers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - reported by the build step itself
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run_demo(*, keep: bool = False, workdir: str | os.PathLike[str] | None = None, device: str | None = None) -> int:
    return Demo(keep=keep, workdir=workdir, device=device).run()
