"""Shared state for the inference tests: one Inference (and so one loaded model per backend) per
test process, in a temporary data dir, so the torch conversion and CAA builds happen once."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from inference import Inference, InferenceConfig

CHAT = [{"role": "user", "content": "Tell me about your weekend."}]


@lru_cache(maxsize=1)
def data_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tinymorph-inference-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@lru_cache(maxsize=1)
def inference() -> Inference:
    return Inference(InferenceConfig(data_dir=data_dir()))



@contextlib.contextmanager
def serving(inf: Inference) -> Iterator[str]:
    """``/v1`` for ``inf`` on a real uvicorn server on a free port; yields its base URL."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from inference.server import create_app

    app = Starlette(routes=[Mount("/v1", app=create_app(inference=inf))])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
