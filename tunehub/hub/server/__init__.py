"""A Hub-compatible server: the unmodified huggingface_hub client works against it via HF_ENDPOINT.

``storage`` (SQLite + content-addressed blobs) and ``validation`` need only the standard
library; ``app`` and ``serve`` import starlette/uvicorn (the ``server`` extra) when used.
"""
