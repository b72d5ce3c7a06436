from __future__ import annotations

from tunehub.hub.urls import hub_resolve_url, local_name, parse_hub_url


def test_parse_plain_hub_url() -> None:
    hub = parse_hub_url("https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/sub/dir/x_bf16.safetensors")
    assert hub is not None
    assert (hub.endpoint, hub.repo_type, hub.repo_id, hub.revision, hub.path) == (
        "https://huggingface.co",
        "model",
        "DeepBeepMeep/Wan2.1",
        "main",
        "sub/dir/x_bf16.safetensors",
    )


def test_parse_dataset_any_endpoint_and_encoded_revision() -> None:
    hub = parse_hub_url("http://127.0.0.1:8080/datasets/ns/data/resolve/refs%2Fpr%2F3/a%20b.json")
    assert hub is not None
    assert hub.endpoint == "http://127.0.0.1:8080"
    assert hub.repo_type == "dataset"
    assert hub.repo_id == "ns/data"
    assert hub.revision == "refs/pr/3"
    assert hub.path == "a b.json"
    assert hub.url == "http://127.0.0.1:8080/datasets/ns/data/resolve/refs%2Fpr%2F3/a%20b.json"


def test_endpoint_with_path_prefix() -> None:
    hub = parse_hub_url("https://mirror.lan/hf/ns/name/resolve/abc123/f.safetensors")
    assert hub is not None
    assert (hub.endpoint, hub.repo_id, hub.revision) == ("https://mirror.lan/hf", "ns/name", "abc123")


def test_not_hub_urls() -> None:
    assert parse_hub_url("https://example.com/files/x.safetensors") is None
    assert parse_hub_url("ckpts/x.safetensors") is None
    assert parse_hub_url("https://h/ns/name/resolve/main/") is None


def test_local_names_are_flat_base_names() -> None:
    assert local_name("https://huggingface.co/a/b/resolve/main/sub/x.safetensors") == "x.safetensors"
    assert local_name("https://example.com/dl/y%20z.safetensors?download=1") == "y z.safetensors"
    assert local_name("ckpts/z_quanto_fp16_int8.safetensors") == "z_quanto_fp16_int8.safetensors"
    assert local_name("/abs/path/w.safetensors") == "w.safetensors"


def test_build_then_parse_round_trip() -> None:
    url = hub_resolve_url("http://h:1", "ns/n", "feature/x", "a/b.bin", "dataset")
    hub = parse_hub_url(url)
    assert hub is not None and (hub.repo_type, hub.revision, hub.path) == ("dataset", "feature/x", "a/b.bin")


def test_hub_urls_imports_first_without_a_cycle() -> None:
    import subprocess
    import sys

    for module in ("tunehub.hub.urls", "tunehub.hub.pull", "tunehub.hub.publish", "tunehub.registry.naming"):
        result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
        assert result.returncode == 0, f"import {module} first: {result.stderr}"
