"""The unmodified huggingface_hub client against `tunehub hub serve` (a real subprocess, real HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import httpx
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.validation import git_blob_sha1

LFS_SIZE = 6 * 1024 * 1024  # over the 5 MiB line: an LFS file whatever its name


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> HubServer:
    base = tmp_path_factory.mktemp("hub-client")
    # A small page size makes the client follow Link: rel="next" on trees, commits and listings.
    hub = HubServer(base / "root", home=base / "home", page_size=3).start()
    hub.add_org("studio", "alice")
    yield hub
    assert hub.stop() == 0


@pytest.fixture
def hub(server: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    server.use_in_process(monkeypatch)
    return server


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_create_upload_and_model_info(hub: HubServer, tmp_path: Path) -> None:
    api = hub.api()
    repo = f"alice/{unique()}"
    url = api.create_repo(repo)
    assert str(url).endswith(repo)
    assert api.create_repo(repo, exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as exists:
        api.create_repo(repo)
    assert exists.value.response.status_code == 409

    small = b'{"hello": "world"}\n'
    big = os.urandom(LFS_SIZE)
    api.upload_file(path_or_fileobj=small, path_in_repo="config.json", repo_id=repo)
    (tmp_path / "weights.bin").write_bytes(big)
    api.upload_file(path_or_fileobj=str(tmp_path / "weights.bin"), path_in_repo="sub/weights.bin", repo_id=repo)

    info = api.model_info(repo, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", "config.json", "sub/weights.bin"}
    assert siblings["config.json"].size == len(small)
    assert siblings["config.json"].blob_id == git_blob_sha1(small)
    assert siblings["config.json"].lfs is None
    lfs = siblings["sub/weights.bin"].lfs
    assert lfs is not None and lfs.sha256 == hashlib.sha256(big).hexdigest() and lfs.size == len(big)
    assert siblings["sub/weights.bin"].size == len(big)
    assert info.sha == api.list_repo_commits(repo)[0].commit_id
    assert info.private is False

    assert api.repo_exists(repo)
    assert not api.repo_exists(f"alice/{unique()}")
    assert api.file_exists(repo, "sub/weights.bin")
    assert not api.file_exists(repo, "sub/missing.bin")


def test_downloads_cache_local_dir_snapshot_and_revisions(hub: HubServer, tmp_path: Path) -> None:
    api = hub.api()
    repo = f"alice/{unique()}"
    api.create_repo(repo)
    folder = tmp_path / "folder"
    (folder / "nested" / "deeper").mkdir(parents=True)
    contents = {
        "a.txt": b"first version\n",
        "nested/b.json": b"{}",
        "nested/deeper/c.safetensors": os.urandom(3000),
        "big.bin": os.urandom(LFS_SIZE),
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    first = api.upload_folder(folder_path=folder, repo_id=repo)

    cached = hf_hub_download(repo, "big.bin")
    assert sha256_of(cached) == hashlib.sha256(contents["big.bin"]).hexdigest()
    assert f"snapshots{os.sep}{first.oid}" in cached
    local = hf_hub_download(repo, "nested/deeper/c.safetensors", local_dir=tmp_path / "local")
    assert Path(local).read_bytes() == contents["nested/deeper/c.safetensors"]
    assert (tmp_path / "local" / ".cache" / "huggingface" / "download").is_dir()

    snapshot = Path(snapshot_download(repo))
    for name, data in contents.items():
        assert (snapshot / name).read_bytes() == data
    assert (snapshot / ".gitattributes").is_file()

    # A second commit: the old commit sha still serves the old bytes.
    api.upload_file(path_or_fileobj=b"second version\n", path_in_repo="a.txt", repo_id=repo)
    assert Path(hf_hub_download(repo, "a.txt", revision=first.oid)).read_bytes() == b"first version\n"
    assert Path(hf_hub_download(repo, "a.txt")).read_bytes() == b"second version\n"

    # A branch with a slash travels as one %2F-encoded segment.
    api.create_branch(repo, branch="feature/x", revision=first.oid)
    api.upload_file(path_or_fileobj=b"on the branch\n", path_in_repo="a.txt", repo_id=repo, revision="feature/x")
    assert Path(hf_hub_download(repo, "a.txt", revision="feature/x")).read_bytes() == b"on the branch\n"
    refs = api.list_repo_refs(repo)
    assert {b.name for b in refs.branches} == {"main", "feature/x"}
    # Tags are revisions too, and cannot be committed to.
    api.create_tag(repo, tag="v1.0", revision=first.oid)
    with pytest.raises(HfHubHTTPError) as duplicate:
        api.create_tag(repo, tag="v1.0")
    assert duplicate.value.response.status_code == 409
    assert Path(hf_hub_download(repo, "a.txt", revision="v1.0")).read_bytes() == b"first version\n"
    assert [(t.name, t.target_commit) for t in api.list_repo_refs(repo).tags] == [("v1.0", first.oid)]
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo, revision="v1.0")
    api.delete_tag(repo, tag="v1.0")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision="v1.0")
    assert {f for f in api.list_repo_files(repo, revision="feature/x")} == {".gitattributes", *contents}


def test_tree_listing_commits_and_paths_info(hub: HubServer) -> None:
    api = hub.api()
    repo = f"alice/{unique()}"
    api.create_repo(repo)
    operations = [
        CommitOperationAdd(path_in_repo=f"dir/file{i}.txt", path_or_fileobj=f"file {i}\n".encode()) for i in range(5)
    ] + [
        CommitOperationAdd(path_in_repo="dir/sub/x.txt", path_or_fileobj=b"x"),
        CommitOperationAdd(path_in_repo="top.txt", path_or_fileobj=b"top"),
    ]
    api.create_commit(repo, operations=operations, commit_message="add files", commit_description="many files")

    files = api.list_repo_files(repo)  # 9 entries over pages of 3
    assert sorted(files) == sorted([".gitattributes", "top.txt", "dir/sub/x.txt"] + [f"dir/file{i}.txt" for i in range(5)])
    top_level = {(e.path, type(e).__name__) for e in api.list_repo_tree(repo)}
    assert top_level == {(".gitattributes", "RepoFile"), ("dir", "RepoFolder"), ("top.txt", "RepoFile")}
    under_dir = {e.path for e in api.list_repo_tree(repo, path_in_repo="dir")}
    assert under_dir == {f"dir/file{i}.txt" for i in range(5)} | {"dir/sub"}
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo, path_in_repo="nope"))
    expanded = [e for e in api.list_repo_tree(repo, path_in_repo="dir/sub", expand=True)]
    assert expanded[0].last_commit is not None and expanded[0].last_commit.title == "add files"

    infos = api.get_paths_info(repo, ["top.txt", "dir/sub", "missing.txt"])
    assert {(i.path, type(i).__name__) for i in infos} == {("top.txt", "RepoFile"), ("dir/sub", "RepoFolder")}

    # Additions and deletions (a file and a folder) in one commit.
    api.create_commit(
        repo,
        operations=[
            CommitOperationDelete(path_in_repo="top.txt"),
            CommitOperationDelete(path_in_repo="dir/sub/", is_folder=True),
            CommitOperationAdd(path_in_repo="new.txt", path_or_fileobj=b"new"),
        ],
        commit_message="reshuffle",
    )
    assert sorted(api.list_repo_files(repo)) == sorted([".gitattributes", "new.txt"] + [f"dir/file{i}.txt" for i in range(5)])
    for i in range(3):
        api.upload_file(path_or_fileobj=f"v{i}".encode(), path_in_repo="new.txt", repo_id=repo, commit_message=f"v{i}")
    commits = api.list_repo_commits(repo)  # 6 commits over pages of 3
    assert [c.title for c in commits] == ["v2", "v1", "v0", "reshuffle", "add files", "initial commit"]
    assert commits[4].message == "many files" and commits[4].authors == ["alice"]
    assert commits[-1].authors == ["system"]
    # expand: the last commit that changed each file.
    expanded_info = {i.path: i for i in api.get_paths_info(repo, ["new.txt", "dir/file0.txt", ".gitattributes"], expand=True)}
    assert expanded_info["new.txt"].last_commit.title == "v2"
    assert expanded_info["dir/file0.txt"].last_commit.title == "add files"
    assert expanded_info[".gitattributes"].last_commit.title == "initial commit"


def test_unchanged_upload_is_skipped_and_stale_parent_refused(hub: HubServer) -> None:
    api = hub.api()
    repo = f"alice/{unique()}"
    api.create_repo(repo)
    data = os.urandom(LFS_SIZE)
    first = api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo)
    api.upload_file(path_or_fileobj=b"cfg", path_in_repo="c.json", repo_id=repo)
    head = api.model_info(repo).sha
    # preupload reports the current oid: the same bytes again make no commit at all.
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo)
    api.upload_file(path_or_fileobj=b"cfg", path_in_repo="c.json", repo_id=repo)
    assert api.model_info(repo).sha == head
    # A commit based on an old parent is refused; the head does not move.
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit(
            repo,
            operations=[CommitOperationAdd(path_in_repo="late.txt", path_or_fileobj=b"late")],
            commit_message="late",
            parent_commit=first.oid,
        )
    assert stale.value.response.status_code == 412
    assert api.model_info(repo).sha == head
    ok = api.create_commit(
        repo,
        operations=[CommitOperationAdd(path_in_repo="late.txt", path_or_fileobj=b"late")],
        commit_message="on time",
        parent_commit=head,
    )
    assert api.model_info(repo).sha == ok.oid


def test_not_found_errors(hub: HubServer) -> None:
    api = hub.api()
    repo = f"alice/{unique()}"
    api.create_repo(repo)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"alice/{unique()}")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"alice/{unique()}", "x.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, "missing.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, ".gitattributes", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo, revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_commits(repo, revision="nope")


def test_auth_on_writes(hub: HubServer) -> None:
    repo = f"alice/{unique()}"
    hub.api().create_repo(repo)
    upload = dict(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo)
    with pytest.raises(HfHubHTTPError) as bad:
        hub.api(token="hf_" + "x" * 34).upload_file(**upload)
    assert bad.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as missing:
        hub.api(token="").create_repo(f"alice/{unique()}")
    assert missing.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as no_token_upload:
        hub.api(token="").upload_file(**upload)
    assert no_token_upload.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as read_only:
        hub.api(token=hub.read_token).upload_file(**upload)
    assert read_only.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as other_user:
        hub.api(token=hub.bob_token).upload_file(**upload)
    assert other_user.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError):
        hub.api(token=hub.bob_token).create_repo(f"alice/{unique()}")
    assert hub.api().list_repo_files(repo) == [".gitattributes"]

    # Organisation: alice is a member of studio, bob is not.
    org_repo = f"studio/{unique()}"
    hub.api().create_repo(org_repo)
    hub.api().upload_file(path_or_fileobj=b"o", path_in_repo="o.txt", repo_id=org_repo)
    with pytest.raises(HfHubHTTPError) as not_member:
        hub.api(token=hub.bob_token).upload_file(path_or_fileobj=b"b", path_in_repo="b.txt", repo_id=org_repo)
    assert not_member.value.response.status_code == 403

    me = hub.api().whoami()
    assert me["name"] == "alice" and me["auth"]["accessToken"]["role"] == "write"
    assert [o["name"] for o in me["orgs"]] == ["studio"]
    assert hub.api(token=hub.read_token).whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError):
        hub.api(token="hf_" + "y" * 34).whoami()


def test_private_repo_invisible_without_its_token(hub: HubServer, tmp_path: Path) -> None:
    repo = f"alice/{unique('private')}"
    hub.api().create_repo(repo, private=True)
    hub.api().upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=repo)
    assert hub.api().model_info(repo).private is True
    for token in ("", hub.bob_token):
        api = hub.api(token=token)
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(repo)
        with pytest.raises(RepositoryNotFoundError):
            api.list_repo_files(repo)
        assert not api.repo_exists(repo)
        assert repo not in {m.id for m in api.list_models(author="alice")}
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo, "s.txt", token=token or False, cache_dir=tmp_path / "c")
    # The read-only token of the owner reads it.
    path = hf_hub_download(repo, "s.txt", token=hub.read_token, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"secret"
    assert repo in {m.id for m in hub.api(token=hub.read_token).list_models(author="alice")}


def test_list_models_author_and_search_and_datasets(hub: HubServer) -> None:
    api = hub.api()
    tag = uuid.uuid4().hex[:6]
    names = [f"alice/{tag}-wan-{i}" for i in range(4)] + [f"studio/{tag}-hunyuan"]
    for name in names:
        api.create_repo(name)
    alice = {m.id for m in api.list_models(author="alice", search=tag)}
    assert alice == set(names[:4])  # 4 results over pages of 3
    assert {m.id for m in api.list_models(search=f"{tag}-hunyuan")} == {names[4]}
    assert len(list(api.list_models(search=tag, limit=2))) == 2

    dataset = f"alice/{unique('data')}"
    api.create_repo(dataset, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="t.csv", repo_id=dataset, repo_type="dataset")
    path = hf_hub_download(dataset, "t.csv", repo_type="dataset")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    assert not api.repo_exists(dataset)  # a model of that name does not exist
    assert api.repo_exists(dataset, repo_type="dataset")


def test_range_requests_return_exact_bytes(hub: HubServer) -> None:
    repo = f"alice/{unique()}"
    api = hub.api()
    api.create_repo(repo)
    data = os.urandom(LFS_SIZE)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo)
    url = f"{hub.url}/{repo}/resolve/main/w.bin"
    with httpx.Client() as client:
        head = client.head(url)
        assert head.status_code == 200
        assert head.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert head.headers["x-repo-commit"] == api.model_info(repo).sha
        assert int(head.headers["content-length"]) == len(data)
        for header, (start, end) in {
            "bytes=10-19": (10, 20),
            "bytes=5000000-": (5000000, len(data)),
            "bytes=-100": (len(data) - 100, len(data)),
            f"bytes=100-{len(data) + 50}": (100, len(data)),
        }.items():
            answer = client.get(url, headers={"Range": header})
            assert answer.status_code == 206, header
            assert answer.content == data[start:end], header
            assert answer.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"
        outside = client.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert outside.status_code == 416
        assert outside.headers["content-range"] == f"bytes */{len(data)}"
        assert client.get(url).content == data


def test_delete_repo_visibility_and_readme(hub: HubServer) -> None:
    api = hub.api()
    repo = f"alice/{unique()}"
    api.create_repo(repo)
    # A README goes through validate-yaml first, as on the Hub.
    api.upload_file(path_or_fileobj=b"---\nlicense: apache-2.0\n---\n# Tiny\n", path_in_repo="README.md", repo_id=repo)
    assert "README.md" in api.list_repo_files(repo)

    api.update_repo_settings(repo, private=True)
    assert api.model_info(repo).private is True
    with pytest.raises(RepositoryNotFoundError):
        hub.api(token="").model_info(repo)
    api.update_repo_settings(repo, private=False)
    assert hub.api(token="").model_info(repo).private is False

    with pytest.raises(HfHubHTTPError) as not_owner:
        hub.api(token=hub.bob_token).delete_repo(repo)
    assert not_owner.value.response.status_code == 403
    api.delete_repo(repo)
    assert not api.repo_exists(repo)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo)
    api.delete_repo(repo, missing_ok=True)
    # The name is free again: a new repo starts from its own initial commit.
    api.create_repo(repo)
    assert api.list_repo_files(repo) == [".gitattributes"]


def test_unusual_but_valid_names(hub: HubServer) -> None:
    api = hub.api()
    repo = f"alice/{unique()}"
    api.create_repo(repo)
    names = ["données/é t#1.txt", "with space.json", "percent%20literal.txt", "a+b=c&d?.txt"]
    api.create_commit(
        repo,
        operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=name.encode()) for name in names],
        commit_message="names",
    )
    assert sorted(api.list_repo_files(repo)) == sorted([".gitattributes", *names])
    for name in names:
        assert Path(hf_hub_download(repo, name)).read_bytes() == name.encode()
        assert api.file_exists(repo, name)


def test_copies_within_and_across_repos(hub: HubServer) -> None:
    from huggingface_hub import CommitOperationCopy

    api = hub.api()
    source = f"alice/{unique('src')}"
    private = f"alice/{unique('priv')}"
    api.create_repo(source)
    api.create_repo(private, private=True)
    weights = os.urandom(LFS_SIZE)
    api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=source)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="c.json", repo_id=source)
    api.create_commit(
        source,
        operations=[
            CommitOperationCopy(src_path_in_repo="w.safetensors", path_in_repo="copy/w.safetensors"),
            CommitOperationCopy(src_path_in_repo="c.json", path_in_repo="copy/c.json"),
        ],
        commit_message="copy within",
    )
    assert Path(hf_hub_download(source, "copy/w.safetensors")).read_bytes() == weights
    assert Path(hf_hub_download(source, "copy/c.json")).read_bytes() == b"{}"

    # Across repos (client 2.x does LFS cross-repo copies only over Xet, so speak the commit
    # protocol directly): an lfsFile pointer to an object of a repo the committer can read is
    # accepted, one to an object of a repo they cannot read is not.
    secret = os.urandom(LFS_SIZE)
    api.upload_file(path_or_fileobj=secret, path_in_repo="s.safetensors", repo_id=private)
    bob_repo = f"bob/{unique()}"
    hub.api(token=hub.bob_token).create_repo(bob_repo)

    def bob_commit(oid: str, size: int) -> httpx.Response:
        lines = [
            {"key": "header", "value": {"summary": "copy", "description": ""}},
            {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": oid, "size": size}},
        ]
        return httpx.post(
            f"{hub.url}/api/models/{bob_repo}/commit/main",
            content="\n".join(json.dumps(line) for line in lines).encode(),
            headers={"Authorization": f"Bearer {hub.bob_token}", "Content-Type": "application/x-ndjson"},
        )

    assert bob_commit(hashlib.sha256(secret).hexdigest(), len(secret)).status_code == 400
    assert bob_commit(hashlib.sha256(weights).hexdigest(), len(weights)).status_code == 200
    assert Path(hf_hub_download(bob_repo, "w.safetensors", token=hub.bob_token)).read_bytes() == weights
