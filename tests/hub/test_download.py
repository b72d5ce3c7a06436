"""The transfer engine against a real loopback HTTP server with injected faults."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.hub.test_download_helpers import range_server  # noqa: F401  (fixture)
from tunehub.errors import DiskFullError, HubError, HubNotFoundError, IntegrityError, OfflineError
from tunehub.hub.download import download_file, part_paths


def test_parallel_ranged_download_verifies_and_places(range_server, tmp_path):  # noqa: F811
    data = os.urandom(5 * 1024 * 1024 + 123)
    url = range_server.add("/files/model.safetensors", data)
    events = []
    result = download_file(
        url,
        tmp_path / "model.safetensors",
        expected_sha256=hashlib.sha256(data).hexdigest(),
        connections=3,
        part_size=1 << 20,
        progress=events.append,
    )
    assert (tmp_path / "model.safetensors").read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.bytes_transferred == len(data)
    ranges = [r[2].get("Range") for r in range_server.gets()]
    assert len(ranges) == 6 and all(r and r.startswith("bytes=") for r in ranges)
    assert events[-1] == {"file": "model.safetensors", "total": len(data), "completed": len(data), "status": "done"}
    assert {"verifying"} <= {e["status"] for e in events}
    # nothing left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_sha256_mismatch_discards_and_places_nothing(range_server, tmp_path):  # noqa: F811
    data = os.urandom(2 * 1024 * 1024)
    url = range_server.add("/x.bin", data)
    range_server.faults.alter = True
    with pytest.raises(IntegrityError) as info:
        download_file(url, tmp_path / "x.bin", expected_sha256=hashlib.sha256(data).hexdigest(), part_size=1 << 20)
    assert "x.bin" in str(info.value) and "discarded" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_retry_after_is_honoured(range_server, tmp_path):  # noqa: F811
    data = os.urandom(100_000)
    url = range_server.add("/r.bin", data)
    range_server.faults.fail_statuses = [429, 503]
    range_server.faults.retry_after = "1"
    download_file(url, tmp_path / "r.bin", connections=1)
    gets = range_server.gets()
    assert len(gets) == 3
    assert gets[1][3] - gets[0][3] >= 0.95 and gets[2][3] - gets[1][3] >= 0.95
    assert (tmp_path / "r.bin").read_bytes() == data


def test_dropped_connection_resumes_at_last_byte(range_server, tmp_path):  # noqa: F811
    data = os.urandom(3 * 1024 * 1024)
    url = range_server.add("/d.bin", data)
    range_server.faults.drop_after = [700_000]
    result = download_file(url, tmp_path / "d.bin", connections=1, part_size=len(data))
    assert (tmp_path / "d.bin").read_bytes() == data
    second_range = range_server.gets()[1][2]["Range"]
    start = int(second_range.split("=")[1].split("-")[0])
    assert 0 < start <= 700_000
    assert result.bytes_transferred == len(data)


def test_404_names_the_url_and_context(range_server, tmp_path):  # noqa: F811
    with pytest.raises(HubNotFoundError) as info:
        download_file(range_server.url + "/missing.bin", tmp_path / "m.bin", context=" (definition t2v_demo)")
    assert range_server.url + "/missing.bin" in str(info.value) and "t2v_demo" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_persistent_5xx_gives_up_with_partial_kept(range_server, tmp_path):  # noqa: F811
    data = os.urandom(200_000)
    url = range_server.add("/e.bin", data)
    range_server.faults.fail_statuses = [500] * 3
    range_server.faults.retry_after = "0"
    with pytest.raises(HubError, match="HTTP 500"):
        download_file(url, tmp_path / "e.bin", connections=1, max_retries=2, backoff_s=0.05)
    assert not (tmp_path / "e.bin").exists()


def test_partial_resumes_from_record_in_a_new_call(range_server, tmp_path):  # noqa: F811
    data = os.urandom(4 * 1024 * 1024)
    url = range_server.add("/p.bin", data)
    dest = tmp_path / "p.bin"
    # First call dies on a connection that keeps dropping: the partial and its record stay.
    range_server.faults.drop_after = [1_500_000, 0, 0, 0]
    with pytest.raises(HubError, match="run the same command again"):
        download_file(url, dest, connections=1, part_size=1 << 20, max_retries=3, backoff_s=0.05)
    part, record = part_paths(dest)
    assert part.exists() and record.exists() and not dest.exists()
    assert sum(json.loads(record.read_text())["done"]) >= 1 << 20
    range_server.bytes_sent = 0
    result = download_file(url, dest, connections=2, part_size=1 << 20)
    assert dest.read_bytes() == data
    assert result.resumed_from >= 1 << 20
    assert range_server.bytes_sent == len(data) - result.resumed_from
    assert not part.exists() and not record.exists()


def test_changed_remote_restarts_from_zero(range_server, tmp_path):  # noqa: F811
    data = os.urandom(2 * 1024 * 1024)
    url = range_server.add("/c.bin", data)
    dest = tmp_path / "c.bin"
    range_server.faults.drop_after = [600_000, 0, 0]
    with pytest.raises(HubError):
        download_file(url, dest, connections=1, part_size=1 << 20, max_retries=2, backoff_s=0.05)
    new_data = os.urandom(len(data))
    range_server.add("/c.bin", new_data)  # new ETag
    result = download_file(url, dest, connections=2, part_size=1 << 20)
    assert result.resumed_from == 0
    assert dest.read_bytes() == new_data


def test_disk_space_checked_before_starting(range_server, tmp_path):  # noqa: F811
    url = range_server.add("/big.bin", os.urandom(1000))
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(DiskFullError) as info:
        download_file(url, tmp_path / "big.bin", reserve_free_bytes=free + (1 << 40))
    assert str(tmp_path) in str(info.value)
    assert range_server.gets() == []
    assert not (tmp_path / "big.bin").exists()


def test_offline_sends_nothing(range_server, tmp_path, monkeypatch):  # noqa: F811
    url = range_server.add("/o.bin", b"abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="offline"):
        download_file(url, tmp_path / "o.bin")
    assert range_server.requests == []


def test_progress_events_are_monotonic(range_server, tmp_path):  # noqa: F811
    data = os.urandom(3 * 1024 * 1024)
    url = range_server.add("/s.bin", data)
    range_server.faults.delay_per_mb = 0.5  # slow enough for several progress intervals
    events = []
    download_file(url, tmp_path / "s.bin", connections=2, part_size=1 << 20, progress=events.append)
    downloading = [e["completed"] for e in events if e["status"] == "downloading"]
    assert len(downloading) >= 2 and downloading == sorted(downloading)
    assert all(e["total"] == len(data) for e in events)


def test_get_redirect_to_another_origin_drops_credentials(range_server, tmp_path):  # noqa: F811
    from tests.hub.test_download_helpers import RangeServer
    from tunehub.hub.download import RemoteFile

    data = os.urandom(2 * 1024 * 1024)
    cdn = RangeServer()
    try:
        range_server.add("/moved.bin", data)
        cdn_url = cdn.add("/blob", data)
        range_server.redirects["/moved.bin"] = cdn_url
        remote = RemoteFile(url=range_server.url + "/moved.bin", location=range_server.url + "/moved.bin",
                            size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                            auth_headers={"authorization": "Bearer hf_notForTheCdn"})
        download_file(remote.url, tmp_path / "moved.bin", remote=remote, connections=2, part_size=1 << 20)
        assert (tmp_path / "moved.bin").read_bytes() == data
        assert len(cdn.gets()) == 2
        assert all("authorization" not in {k.lower() for k in r[2]} for r in cdn.gets())
    finally:
        cdn.close()


def test_two_concurrent_fetches_of_one_target_transfer_it_once(range_server, tmp_path):  # noqa: F811
    import threading

    data = os.urandom(3 * 1024 * 1024)
    url = range_server.add("/twice.bin", data)
    range_server.faults.delay_per_mb = 0.2
    sha = hashlib.sha256(data).hexdigest()
    results, errors = [], []

    def fetch():
        try:
            results.append(download_file(url, tmp_path / "twice.bin", expected_sha256=sha, part_size=1 << 20))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.bytes_transferred for r in results) == [0, len(data)]
    assert (tmp_path / "twice.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["twice.bin"]
