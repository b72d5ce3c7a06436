"""A Hub-compatible server: the unmodified huggingface_hub client works against it via HF_ENDPOINT.

Use (a LAN mirror, or a private Hub for a studio)::

    tunehub hub token add alice --write --root /srv/hub     # prints the token once
    tunehub hub org add studio --member alice --root /srv/hub
    tunehub hub import ~/.cache/huggingface/hub/models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers --link \\
        --repo Wan-AI/Wan2.1-T2V-1.3B-Diffusers --root /srv/hub    # seed from files on disk
    tunehub hub serve --root /srv/hub --host 0.0.0.0 --port 8080
    # clients:
    export HF_ENDPOINT=http://server:8080 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_...

Modules: ``validation`` (names, paths, upload-mode rules) and ``storage`` (SQLite +
content-addressed blobs) need only the standard library; ``importer`` builds on storage;
``app`` (the endpoints) and ``serve`` import starlette/uvicorn (the ``server`` extra)
and are only imported by ``tunehub hub serve``. With ``--upstream URL`` the server is also a
verified pull-through mirror of another Hub: ``mirror`` (the backend), ``mirror_store`` (its
tables), ``hubconfig`` (``ROOT/hub.toml``); ``metrics`` serves ``/metrics``.

What it does not do: Xet (clients must set HF_HUB_DISABLE_XET=1; a Xet token request is
answered with a 400 saying so), pull requests, gated repos of its own (gated upstream repos
are mirrored for granted tokens), Spaces runtimes, git
over HTTP (clone/push). Revisions are branches, tags and full commit shas.
"""
