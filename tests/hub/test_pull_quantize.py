"""``auto_quantize``: pulling int8 of a definition that only publishes a 16-bit file quantizes it here."""

from __future__ import annotations

import json

import pytest

from tunehub.flows import pull_definition as pull

pytest.importorskip("optimum.quanto", reason="auto_quantize needs the quant extra (installed on CI)")


def test_auto_quantize_runs_after_the_pull(home, hub_server, monkeypatch, tmp_path):
    from tests.fixtures.tiny_models import write_finetune

    hub_server.use_in_process(monkeypatch)
    source = write_finetune("t2v_1.3B", tmp_path)["transformer"]
    api = hub_server.api()
    api.create_repo("alice/tiny")
    api.upload_file(path_or_fileobj=str(source), path_in_repo=source.name, repo_id="alice/tiny")
    url = f"{hub_server.url}/alice/tiny/resolve/main/{source.name}"
    path = home.write_definition("t2v_auto", {"name": "auto", "architecture": "t2v_1.3B", "URLs": [url],
                                              "auto_quantize": True})
    result = pull(home.config(), home.registry(), "t2v_auto", quantization="int8", dtype="bf16")
    assert [item.filename for item in result.files] == [source.name]
    assert len(result.quantized) == 1 and result.quantized[0].exists()
    assert "quanto" in result.quantized[0].name and "int8" in result.quantized[0].name
    assert json.loads(path.read_text())["model"]["URLs"] == [url, result.quantized[0].name]
    # without auto_quantize's work left: a second pull neither downloads nor quantizes again
    again = pull(home.config(), home.registry(), "t2v_auto", quantization="int8", dtype="bf16")
    assert again.bytes_transferred == 0 and again.quantized == []
