"""Shared test fixtures, including a local Hugging Face Hub (``tests/hub_server.py``).

Why the environment is set here, at import time: ``huggingface_hub`` (and ``transformers``) read
``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_DISABLE_XET`` and ``HF_HUB_OFFLINE`` into module constants
when they are first imported. pytest imports this file before any test module, so the values are
fixed once per session: a free port chosen now (the ``hub_server`` fixture starts the server on
it lazily), a throw-away ``HF_HOME`` (removed at the end of the session) and ``HF_TOKEN`` set to the
server's token, so the client authenticates without ``token=`` arguments. Nothing in a test
session can reach huggingface.co. Do not import ``huggingface_hub`` in other conftest files.

Offline mode: the ``hub_offline`` fixture stops the server and flips the import-time constant
``huggingface_hub.constants.HF_HUB_OFFLINE`` (which ``huggingface_hub.is_offline_mode`` and thus
``transformers`` read at call time) and sets ``HF_HUB_OFFLINE=1`` for subprocesses; both are
undone and the server restarted (same port, same repos) after the test.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator

import pytest
from hub_server import USER, HubServer


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if "huggingface_hub" in sys.modules:
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py: its endpoint cannot be redirected")

# MKL picks kernels by memory alignment, so two identical models can differ in the last bits of
# a matmul; its conditional-numerical-reproducibility mode makes "bit-identical" checks meaningful.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
if "torch" in sys.modules:
    raise RuntimeError("torch was imported before tests/conftest.py: MKL_CBWR cannot take effect")

HUB_PORT = _free_port()
HUB_TOKEN = f"hf_test_{secrets.token_hex(12)}"
HF_HOME = tempfile.mkdtemp(prefix="co-settle-hf-home-")
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
              "HF_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER"):
    os.environ.pop(_name, None)
os.environ.update({
    "HF_ENDPOINT": f"http://127.0.0.1:{HUB_PORT}",
    "HF_HOME": HF_HOME,
    "HF_TOKEN": HUB_TOKEN,
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
})


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The session's local Hub at ``HF_ENDPOINT``; ``.endpoint``, ``.token``, ``.store``, ``.stop()``, ``.start()``."""
    server = HubServer(port=HUB_PORT, token=HUB_TOKEN)
    try:
        server.start()
    except OSError as err:
        raise RuntimeError(f"Cannot start the test Hub on port {HUB_PORT} (HF_ENDPOINT): {err}") from err
    yield server
    server.stop()


@pytest.fixture
def hub_repo_id(hub_server: HubServer, request: pytest.FixtureRequest) -> str:
    """A fresh, not yet created repo id under the test user, unique per test (the cache is shared)."""
    name = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-.")[:60]
    return f"{USER}/{name}-{secrets.token_hex(4)}"


@pytest.fixture
def hub_offline(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """Stop the Hub and switch the client to offline mode for one test; restored afterwards."""
    import huggingface_hub.constants

    hub_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if "datasets.config" in sys.modules:  # datasets copies the flag at import
        monkeypatch.setattr(sys.modules["datasets.config"], "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(sys.modules["datasets.config"], "HF_DATASETS_OFFLINE", True)
    try:
        yield hub_server
    finally:
        hub_server.start()
