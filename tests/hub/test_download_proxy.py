"""Downloads through a company-style proxy: HTTPS_PROXY (CONNECT), HTTP_PROXY, NO_PROXY and
the CA bundle settings, with a real proxy and a real TLS server on loopback."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.hub.proxy_helpers import ForwardProxy, self_signed_certificate
from tests.hub.test_download_helpers import RangeServer

NAME = "wan2.1_t2v_proxy_mbf16.safetensors"
_CLIENT_ENV = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "all_proxy",
               "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a test certificate")


@pytest.fixture
def tls_server(tmp_path: Path) -> Any:
    cert, key = self_signed_certificate(tmp_path)
    server = RangeServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.url = server.url.replace("http://", "https://")
    server.cert = cert
    yield server
    server.close()


@pytest.fixture
def proxy() -> Any:
    forward = ForwardProxy()
    yield forward
    forward.close()


def _env(home: Any, **settings: str) -> dict[str, str]:
    env = home.env()
    for key in _CLIENT_ENV:
        env.pop(key, None)
    env.update(settings)
    return env


def test_https_through_a_connect_proxy_with_the_company_ca_bundle(home: Any, tls_server: Any, proxy: Any) -> None:
    data = os.urandom(3 << 20)
    url = tls_server.add(f"/{NAME}", data)
    home.write_definition("t2v_proxy", {"name": "p", "architecture": "t2v", "URLs": [url]})
    env = _env(home, HTTPS_PROXY=proxy.url, REQUESTS_CA_BUNDLE=str(tls_server.cert))
    done = home.run("pull", "t2v_proxy", "--quantization", "bf16", env=env)
    assert done.returncode == 0, done.stderr
    assert (home.ckpts / NAME).read_bytes() == data
    port = url.split(":")[2].split("/")[0]
    assert proxy.tunnels and set(proxy.tunnels) == {f"127.0.0.1:{port}"}
    assert proxy.tunnelled_bytes >= len(data)  # every byte came through the tunnel

    # the same, with the bundle named by the other settings
    for setting in ("CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        (home.ckpts / NAME).unlink()
        again = home.run("pull", "t2v_proxy", "--quantization", "bf16", env=_env(home, HTTPS_PROXY=proxy.url,
                                                                                 **{setting: str(tls_server.cert)}))
        assert again.returncode == 0, (setting, again.stderr)


def test_no_proxy_and_an_untrusted_certificate(home: Any, tls_server: Any, proxy: Any) -> None:
    data = os.urandom(1 << 20)
    url = tls_server.add(f"/{NAME}", data)
    home.write_definition("t2v_proxy", {"name": "p", "architecture": "t2v", "URLs": [url]})
    # NO_PROXY: straight to the server, the proxy carries nothing
    direct = home.run("pull", "t2v_proxy", "--quantization", "bf16",
                      env=_env(home, HTTPS_PROXY=proxy.url, NO_PROXY="127.0.0.1", REQUESTS_CA_BUNDLE=str(tls_server.cert)))
    assert direct.returncode == 0, direct.stderr
    assert proxy.tunnels == [] and proxy.tunnelled_bytes == 0
    # a certificate nobody vouches for: one line that says which setting fixes it
    (home.ckpts / NAME).unlink()
    refused = home.run("pull", "t2v_proxy", "--quantization", "bf16", env=_env(home, HTTPS_PROXY=proxy.url))
    assert refused.returncode == 1
    assert "certificate verification failed" in refused.stderr and "REQUESTS_CA_BUNDLE" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_a_hub_over_http_proxy(home: Any, hub_server: Any, proxy: Any) -> None:
    from tests.hub.test_pull import _upload

    hub_server.api().create_repo("alice/viaproxy")
    data = os.urandom(2 << 20)
    urls = _upload(hub_server, {NAME: data}, repo="alice/viaproxy")
    home.write_definition("t2v_hubproxy", {"name": "h", "architecture": "t2v", "URLs": list(urls.values())})
    hub_env = {k: v for k, v in hub_server.env().items() if k.lower() != "no_proxy"}  # loopback via the proxy here
    env = _env(home, **hub_env, HTTP_PROXY=proxy.url)
    done = home.run("pull", "t2v_hubproxy", "--quantization", "bf16", env=env)
    assert done.returncode == 0, done.stderr
    assert (home.ckpts / NAME).read_bytes() == data
    gets = [u for m, u in proxy.forwarded if m == "GET" and NAME in u]
    assert gets and proxy.forwarded_bytes >= len(data)  # the bytes (ours) and the metadata (huggingface_hub's)
    assert any(m == "HEAD" for m, _ in proxy.forwarded)
