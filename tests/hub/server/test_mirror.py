"""`tunehub hub serve --upstream`: a second real `tunehub hub serve` on loopback is the upstream;
its /metrics (file bytes it sent) and its files are the ground truth."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.hub_server import HubServer
from tests.hub.server.mirror_helpers import file_bytes_served, metrics, sha256_of, start_mirror
from tests.hub.test_download_helpers import FaultProxy
from tunehub.cli.main import main as tunehub_main

BIG = 24 * 1024 * 1024
RATE = 12 * 1024 * 1024  # the throttled upstream: a 24 MiB transfer lasts about 2 s


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer(tmp_path / "upstream", home=tmp_path / "upstream-home").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token_file(tmp_path: Path, upstream: HubServer) -> Path:
    # The hub's own token for the upstream: alice's read token there (reads her private repos).
    path = tmp_path / "upstream-token"
    path.write_text(upstream.read_token + "\n")
    return path


def publish(upstream: HubServer, repo: str, files: dict[str, bytes], *, private: bool = False) -> str:
    from huggingface_hub import CommitOperationAdd

    api = upstream.api()
    api.create_repo(repo, private=private, exist_ok=True)
    info = api.create_commit(
        repo, [CommitOperationAdd(path_in_repo=k, path_or_fileobj=v) for k, v in files.items()], commit_message="add"
    )
    return info.oid


def get(url: str, token: str | None = None, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.get(url, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def cli(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tunehub_main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_concurrent_clients_share_one_verified_transfer(upstream: HubServer, token_file: Path, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    publish(upstream, "alice/big", {"model.safetensors": data, "config.json": b'{"dim": 8}'})
    proxy = FaultProxy(upstream.url)
    proxy.rate_bytes_per_s = RATE
    mirror = start_mirror(tmp_path / "mirror", proxy.url, token_file)
    try:
        before = file_bytes_served(upstream.url)
        url = f"{mirror.url}/alice/big/resolve/main/model.safetensors"
        results: list[tuple[float, str, int]] = []
        ranged: list[tuple[float, bytes]] = []
        errors: list[BaseException] = []

        def client() -> None:
            try:
                digest = hashlib.sha256()
                first = 0.0
                with httpx.stream("GET", url, headers={"Authorization": f"Bearer {mirror.read_token}"}, timeout=60) as answer:
                    assert answer.status_code == 200, answer.read()
                    for piece in answer.iter_bytes():
                        if not first and piece:
                            first = time.monotonic()
                        digest.update(piece)
                    results.append((first, digest.hexdigest(), answer.num_bytes_downloaded))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def range_client() -> None:
            time.sleep(0.3)  # the transfer is under way: the first MiB is there, the end is not
            answer = get(url, mirror.read_token, headers={"Range": "bytes=0-1048575"})
            assert answer.status_code == 206
            ranged.append((time.monotonic(), answer.content))

        threads = [threading.Thread(target=client) for _ in range(8)] + [threading.Thread(target=range_client)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert len(results) == 8
        assert {sha for _, sha, _ in results} == {sha256_of(data)}
        # The upstream sent the file's bytes once, for eight clients.
        assert file_bytes_served(upstream.url) - before == BIG
        transfers = [t for t in proxy.transfers if t[0].endswith("model.safetensors")]
        assert len(transfers) == 1 and transfers[0][1] == BIG
        upstream_done = transfers[0][2]
        assert min(first for first, _, _ in results) < upstream_done - 0.5
        # A range waits only for its own bytes, not for the whole file.
        assert ranged[0][1] == data[: 1024 * 1024] and ranged[0][0] < upstream_done - 0.5
        assert metrics(mirror.url)["tunehub_mirror_upstream_bytes_total"] == BIG
        # The clients had their last byte once the hash matched; the blob is then synced and put in place.
        deadline = time.monotonic() + 30
        while metrics(mirror.url)["tunehub_mirror_inflight_fetches"] != 0:
            assert time.monotonic() < deadline, "the transfer never finished storing its blob"
            time.sleep(0.1)

        # Later downloads (hf_hub_download into a fresh cache, a range): 0 upstream bytes.
        from huggingface_hub import hf_hub_download

        proxy.rate_bytes_per_s = 0
        path = hf_hub_download("alice/big", "model.safetensors", endpoint=mirror.url, token=mirror.read_token,
                               cache_dir=tmp_path / "cache-2")
        assert sha256_of(Path(path).read_bytes()) == sha256_of(data)
        assert get(url, mirror.read_token, headers={"Range": "bytes=100-199"}).content == data[100:200]
        assert file_bytes_served(upstream.url) - before == BIG
        assert metrics(mirror.url)["tunehub_mirror_hits_total"] >= 2
        log = mirror.log_text()  # --access-log marks each file read
        assert " hit\n" in log and " miss\n" in log
        blobs = list((mirror.root / "blobs" / "sha256").rglob(sha256_of(data)))
        assert len(blobs) == 1
        assert not [p for p in (mirror.root / "tmp").iterdir() if p.name.startswith("mirror-")]
    finally:
        mirror.stop()
        proxy.close()


def test_altered_bytes_never_complete_and_are_refetched(upstream: HubServer, token_file: Path, tmp_path: Path) -> None:
    data = os.urandom(6 * 1024 * 1024)
    publish(upstream, "alice/flip", {"w.safetensors": data, "notes.txt": b"hello mirror\n" * 100})
    proxy = FaultProxy(upstream.url)
    proxy.flip_once = {"w.safetensors", "notes.txt"}  # the first transfer of each file is altered
    proxy.rate_bytes_per_s = RATE  # slow enough that the clients are mid-transfer when the hash fails
    mirror = start_mirror(tmp_path / "mirror", proxy.url, token_file)
    try:
        for name, content in (("w.safetensors", data), ("notes.txt", b"hello mirror\n" * 100)):
            url = f"{mirror.url}/alice/flip/resolve/main/{name}"
            outcomes: list[object] = []

            def client(url: str = url) -> None:
                try:
                    answer = get(url, mirror.read_token)
                    outcomes.append(answer.content if answer.status_code == 200 else answer.status_code)
                except httpx.HTTPError as exc:  # the transfer was cut: the client knows it has no file
                    outcomes.append(type(exc).__name__)

            threads = [threading.Thread(target=client) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert len(outcomes) == 3
            # Nobody got a complete file with the wrong bytes: a cut transfer, a 502, or (for a client
            # that came after the failure) the right bytes from a second transfer.
            for outcome in outcomes:
                assert not isinstance(outcome, bytes) or outcome == content, name
            assert any(not isinstance(outcome, bytes) for outcome in outcomes), outcomes
            # The altered bytes were discarded: whatever blob exists holds the right bytes.
            for blob in (mirror.root / "blobs" / "sha256").rglob("*"):
                if blob.is_file():
                    assert sha256_of(blob.read_bytes()) == blob.name
            again = get(url, mirror.read_token)
            assert again.status_code == 200 and again.content == content
            # The client had its last byte once the hash matched; the blob is then synced and put in place.
            deadline = time.monotonic() + 30
            while metrics(mirror.url)["tunehub_mirror_inflight_fetches"] != 0:
                assert time.monotonic() < deadline, "the refetch never finished storing its blob"
                time.sleep(0.1)
            assert (mirror.root / "blobs" / "sha256" / sha256_of(content)[:2] / sha256_of(content)).is_file()
        assert metrics(mirror.url)["tunehub_mirror_verify_failures_total"] == 2
        assert "does not match its listed hash: discarded" in mirror.log_text()
        assert "cut a client's transfer of w.safetensors" in mirror.log_text()
        assert not [p for p in (mirror.root / "tmp").iterdir() if p.name.startswith("mirror-")]
    finally:
        mirror.stop()
        proxy.close()


def test_upstream_down_serves_cached_then_picks_up_new_commit(
    upstream: HubServer, token_file: Path, tmp_path: Path
) -> None:
    first = publish(upstream, "alice/live", {"a.safetensors": os.urandom(300_000), "b.safetensors": os.urandom(200_000)})
    mirror = start_mirror(tmp_path / "mirror", upstream.url, token_file, ttl="1")
    try:
        url = f"{mirror.url}/alice/live/resolve/main/a.safetensors"
        cached = get(url, mirror.read_token)
        assert cached.status_code == 200 and cached.headers["X-Repo-Commit"] == first
        upstream.stop()
        time.sleep(1.2)  # past the TTL: main would be re-checked, and the upstream does not answer
        stale = get(url, mirror.read_token)
        assert stale.status_code == 200 and stale.content == cached.content
        assert "unreachable" in stale.headers["X-Mirror-Upstream"] and first in stale.headers["X-Mirror-Upstream"]
        missing = get(f"{mirror.url}/alice/live/resolve/main/b.safetensors", mirror.read_token)
        assert missing.status_code == 504
        assert upstream.url in missing.json()["error"] and "not cached" in missing.json()["error"]
        unknown = get(f"{mirror.url}/alice/other/resolve/main/x.bin", mirror.read_token)
        assert unknown.status_code == 504 and upstream.url in unknown.headers["X-Error-Message"]
        code, out, _ = cli("hub", "status", "--root", str(mirror.root))
        assert code == 0 and "UNREACHABLE" in out and upstream.url in out

        upstream.start()  # same root and port
        second = publish(upstream, "alice/live", {"a.safetensors": b"new weights" * 1000})
        deadline = time.monotonic() + 1 + 30 + 5  # TTL, the retry pause after a failure (<= TTL here), slack
        while True:
            answer = get(url, mirror.read_token)
            if answer.headers.get("X-Repo-Commit") == second:
                break
            assert time.monotonic() < deadline, "the new commit on main was not picked up"
            time.sleep(0.3)
        assert answer.content == b"new weights" * 1000 and "X-Mirror-Upstream" not in answer.headers
        code, out, _ = cli("hub", "status", "--root", str(mirror.root))
        assert "reachable" in out and "UNREACHABLE" not in out
        # An old commit sha stays readable and is never asked upstream again.
        checks = metrics(mirror.url)["tunehub_mirror_metadata_checks_total"]
        old = get(f"{mirror.url}/alice/live/resolve/{first}/a.safetensors", mirror.read_token)
        assert old.status_code == 200 and old.content == cached.content
        assert metrics(mirror.url)["tunehub_mirror_metadata_checks_total"] == checks
    finally:
        mirror.stop()


def test_private_upstream_repo_needs_a_granted_token(upstream: HubServer, token_file: Path, tmp_path: Path) -> None:
    secret = os.urandom(100_000)
    publish(upstream, "alice/secret", {"w.safetensors": secret}, private=True)
    publish(upstream, "alice/open", {"w.safetensors": b"open weights"})
    mirror = start_mirror(tmp_path / "mirror", upstream.url, token_file)
    try:
        url = f"{mirror.url}/alice/secret/resolve/main/w.safetensors"
        for token in (mirror.read_token, mirror.bob_token, None):
            answer = get(url, token)
            assert answer.status_code == 404 and answer.headers["X-Error-Code"] == "RepoNotFound"
        assert get(f"{mirror.url}/api/models/alice/secret", mirror.read_token).status_code == 404
        assert "alice/secret" not in str(mirror.get_json("/api/models", token=mirror.read_token))
        # Granted by token id (from `token list`) or by the token itself.
        code, _, _ = cli("hub", "grant", mirror.read_token, "alice/secret", "--root", str(mirror.root))
        assert code == 0
        answer = get(url, mirror.read_token)
        assert answer.status_code == 200 and answer.content == secret
        assert get(url, mirror.bob_token).status_code == 404  # still only the granted token
        assert get(url, mirror.write_token).status_code == 404
        cli("hub", "grant", mirror.read_token, "alice/secret", "--revoke", "--root", str(mirror.root))
        assert get(url, mirror.read_token).status_code == 404
        # Public mirrored repos: any LAN token; no token only with --public-read.
        open_url = f"{mirror.url}/alice/open/resolve/main/w.safetensors"
        assert get(open_url, mirror.bob_token).content == b"open weights"
        assert get(open_url).status_code == 404
    finally:
        mirror.stop()
    public = start_mirror(tmp_path / "mirror-public", upstream.url, token_file, extra=["--public-read"])
    try:
        assert get(f"{public.url}/alice/open/resolve/main/w.safetensors").content == b"open weights"
        # A token the mirror does not know (say a huggingface.co login) reads as none, for reads only.
        assert get(f"{public.url}/alice/open/resolve/main/w.safetensors", "hf_notOneOfOurs").content == b"open weights"
        assert get(f"{public.url}/alice/secret/resolve/main/w.safetensors").status_code == 404
    finally:
        public.stop()


def test_writes_to_a_mirrored_repo_are_refused(upstream: HubServer, token_file: Path, tmp_path: Path) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    publish(upstream, "alice/ro", {"w.safetensors": b"upstream weights"})
    before = upstream.api().model_info("alice/ro").sha
    mirror = start_mirror(tmp_path / "mirror", upstream.url, token_file)
    try:
        api = mirror.api()  # alice's write token on the mirror: alice may write her namespace there
        assert api.model_info("alice/ro").sha == before
        with pytest.raises(HfHubHTTPError) as refused:
            api.upload_file(path_or_fileobj=b"local change", path_in_repo="x.txt", repo_id="alice/ro")
        assert "read-only mirror" in str(refused.value) and upstream.url in str(refused.value)
        with pytest.raises(HfHubHTTPError):
            api.delete_repo("alice/ro")
        assert upstream.api().model_info("alice/ro").sha == before  # nothing went upstream
        # Local repos of the mirror server still work as before.
        api.create_repo("alice/local")
        api.upload_file(path_or_fileobj=b"mine", path_in_repo="x.txt", repo_id="alice/local")
        assert get(f"{mirror.url}/alice/local/resolve/main/x.txt").content == b"mine"
    finally:
        mirror.stop()


def test_prefetch_ls_and_evict(upstream: HubServer, token_file: Path, tmp_path: Path) -> None:
    weights = os.urandom(2_000_000)
    publish(upstream, "alice/warm", {"w.safetensors": weights, "config.json": b'{"x": 1}', "README.md": b"# warm\n"})
    mirror = start_mirror(tmp_path / "mirror", upstream.url, token_file)
    root = str(mirror.root)
    try:
        before = file_bytes_served(upstream.url)
        code, out, err = cli("hub", "mirror", "prefetch", "alice/warm", "--include", "*.json", "--root", root)
        assert code == 0, err
        assert "1 file(s)" in out
        assert file_bytes_served(upstream.url) - before == len(b'{"x": 1}')
        code, out, _ = cli("hub", "mirror", "prefetch", "alice/warm", "--root", root)
        assert code == 0 and "4 file(s), 1 already cached" in out  # with the .gitattributes
        fetched = file_bytes_served(upstream.url) - before
        listed = upstream.api().model_info("alice/warm", files_metadata=True).siblings
        assert fetched == sum(sibling.size for sibling in listed)
        # Served by the running server from the cache: no upstream bytes.
        assert get(f"{mirror.url}/alice/warm/resolve/main/w.safetensors", mirror.read_token).content == weights
        assert file_bytes_served(upstream.url) - before == fetched
        code, out, _ = cli("hub", "mirror", "ls", "--root", root)
        assert code == 0 and "alice/warm" in out and "2.0 MB" in out

        code, out, _ = cli("hub", "mirror", "evict", "--older-than", "1d", "--root", root)
        assert code == 0 and "evicted 0 file(s)" in out
        code, out, _ = cli("hub", "mirror", "evict", "--max-size", "1MB", "--root", root)
        assert code == 0 and "evicted" in out
        assert not (mirror.root / "blobs" / "sha256" / sha256_of(weights)[:2] / sha256_of(weights)).exists()
        # Read again: fetched again, verified, right bytes.
        assert get(f"{mirror.url}/alice/warm/resolve/main/w.safetensors", mirror.read_token).content == weights
        assert file_bytes_served(upstream.url) - before == fetched + len(weights)
        code, out, _ = cli("hub", "mirror", "evict", "alice/warm", "--root", root)
        assert code == 0 and "evicted" in out and "0 B cached remain" in out
        code, _, err = cli("hub", "mirror", "evict", "alice/unknown", "--root", root)
        assert code != 0 and "not a mirrored repo" in err
    finally:
        mirror.stop()


def test_clients_work_unchanged_through_the_mirror(
    upstream: HubServer, token_file: Path, tmp_path: Path, home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.hub.server.test_diffusers_roundtrip import LOAD_AND_RUN, build_pipeline

    folder = tmp_path / "pipeline"
    build_pipeline(folder)
    api = upstream.api()
    api.create_repo("alice/tiny-ddpm")
    api.upload_folder(folder_path=folder, repo_id="alice/tiny-ddpm")
    weights = os.urandom(400_000)
    publish(upstream, "alice/wan-ft", {"wan2.1_t2v_m_mbf16.safetensors": weights})
    mirror = start_mirror(tmp_path / "mirror", upstream.url, token_file)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(mirror.env(token=mirror.read_token))
        # diffusers from_pretrained in a fresh interpreter that knows only HF_ENDPOINT.
        result = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, "alice/tiny-ddpm", str(tmp_path / "out.npy")],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        # `hf download` (the huggingface_hub CLI).
        hf = Path(sys.executable).with_name("hf")
        if hf.exists():
            result = subprocess.run([str(hf), "download", "alice/wan-ft", "--local-dir", str(tmp_path / "hfdl")],
                                    capture_output=True, text=True, env=env, timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            assert (tmp_path / "hfdl" / "wan2.1_t2v_m_mbf16.safetensors").read_bytes() == weights
        # snapshot_download in process.
        mirror.use_in_process(monkeypatch, token=mirror.read_token)
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download("alice/tiny-ddpm", cache_dir=tmp_path / "snap"))
        for saved in folder.rglob("*"):
            if saved.is_file():
                assert (snapshot / saved.relative_to(folder)).read_bytes() == saved.read_bytes()
        # tunehub pull: a definition that names huggingface.co, HF_ENDPOINT at the mirror.
        from tunehub.hub.pull import pull

        home.write_definition("t2v_m", {"name": "m", "architecture": "t2v",
                                        "URLs": ["https://huggingface.co/alice/wan-ft/resolve/main/wan2.1_t2v_m_mbf16.safetensors"]})
        pulled = pull(home.config(), home.registry(), "t2v_m", quantization="bf16")
        assert pulled.files[0].status == "downloaded"
        assert (home.ckpts / "wan2.1_t2v_m_mbf16.safetensors").read_bytes() == weights
    finally:
        mirror.stop()


def test_hub_config_and_option_errors(tmp_path: Path) -> None:
    from tunehub.errors import ConfigError
    from tunehub.hub.server.hubconfig import load_hub_config, parse_duration, parse_size

    assert parse_duration("10m") == 600 and parse_duration(5) == 5 and parse_duration("30d") == 30 * 86400
    assert parse_size("2TB") == 2 * 10**12 and parse_size("1GiB") == 2**30
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("soon")
    code, out, _ = cli("hub", "status", "--root", str(tmp_path / "plain"))
    assert code == 0 and "serving:   no" in out and "none (not a mirror)" in out
    (tmp_path / "hub.toml").write_text('upstream = "http://127.0.0.1:1"\nupstream_tll = "1m"\n')
    with pytest.raises(ConfigError, match="unknown key 'upstream_tll'"):
        load_hub_config(tmp_path)
    (tmp_path / "hub.toml").write_text("public_read = 'yes'\n")
    with pytest.raises(ConfigError, match="public_read must be true or false"):
        load_hub_config(tmp_path)
    code, _, err = cli("hub", "serve", "--root", str(tmp_path / "r"), "--public-read", "--port", "0")
    assert code != 0 and "need --upstream" in err
    secret_file = tmp_path / "empty-token"
    secret_file.write_text("\n")
    (tmp_path / "hub.toml").unlink()
    code, _, err = cli("hub", "serve", "--root", str(tmp_path), "--upstream", "http://127.0.0.1:1",
                       "--upstream-token-file", str(secret_file), "--port", "0")
    assert code != 0 and "is empty" in err


def test_metrics_are_prometheus_text(upstream: HubServer, token_file: Path, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    publish(upstream, "alice/m", {"w.safetensors": b"w" * 10_000})
    mirror = start_mirror(tmp_path / "mirror", upstream.url, token_file)
    try:
        url = f"{mirror.url}/alice/m/resolve/main/w.safetensors"
        get(url, mirror.read_token)
        get(url, mirror.read_token)
        answer = get(f"{mirror.url}/metrics")
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {family.name: family for family in text_string_to_metric_families(answer.text)}
        types = {name: family.type for name, family in families.items()}
        assert types["tunehub_hub_requests"] == "counter" and types["tunehub_mirror_hit_ratio"] == "gauge"
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        assert samples[("tunehub_hub_bytes_served_total", (("kind", "file"),))] == 20_000
        assert samples[("tunehub_mirror_upstream_bytes_total", ())] == 10_000
        assert samples[("tunehub_mirror_hits_total", ())] == 1 and samples[("tunehub_mirror_misses_total", ())] == 1
        assert samples[("tunehub_mirror_hit_ratio", ())] == 0.5
        assert samples[("tunehub_mirror_inflight_fetches", ())] == 0
        assert samples[("tunehub_mirror_upstream_up", ())] == 1
    finally:
        mirror.stop()


def test_datasets_and_tags_through_the_mirror(upstream: HubServer, token_file: Path, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    api = upstream.api()
    api.create_repo("alice/frames", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"frame data" * 100, path_in_repo="part-0.parquet", repo_id="alice/frames",
                    repo_type="dataset")
    api.create_tag("alice/frames", tag="v1", repo_type="dataset")
    # The mirror's settings from ROOT/hub.toml alone (no --upstream option).
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "hub.toml").write_text(
        f'upstream = "{upstream.url}"\nupstream_token_file = "{token_file}"\nupstream_ttl = "5m"\n'
    )
    mirror = HubServer(tmp_path / "mirror").start()
    try:
        for revision in ("main", "v1"):
            path = hf_hub_download("alice/frames", "part-0.parquet", repo_type="dataset", revision=revision,
                                   endpoint=mirror.url, token=mirror.read_token, cache_dir=tmp_path / f"c-{revision}")
            assert Path(path).read_bytes() == b"frame data" * 100
        assert file_bytes_served(upstream.url) == 1000  # one blob, fetched once for both revisions
        files = mirror.api(token=mirror.read_token).list_repo_files("alice/frames", repo_type="dataset")
        assert "part-0.parquet" in files
        code, out, _ = cli("hub", "mirror", "ls", "--root", str(mirror.root))
        assert "datasets/alice/frames" in out
        code, out, _ = cli("hub", "status", "--root", str(mirror.root))
        assert upstream.url in out and "ttl:       300s" in out and str(token_file) in out
    finally:
        mirror.stop()
