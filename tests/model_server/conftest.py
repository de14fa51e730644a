"""The conformance suite's real model server: llama-cpp-python's OpenAI-compatible server.

``ANVIA_MODEL_SERVER_URL`` names it (``scripts/model_server.sh`` starts one and prints its URL;
``.ci/run`` does that and requires these tests). Unset, the tests are skipped with that hint,
except where ``ANVIA_REQUIRE_MODEL_SERVER=1`` or ``CI=true``: there they fail.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass

import pytest

from anvia import OpenAICompatibleModel


@dataclass(frozen=True)
class ModelServer:
    base_url: str
    model: str

    def client(self, **options) -> OpenAICompatibleModel:
        # Short answers keep a 135M model on 2 cores near half a second a turn.
        options = {"timeout": 60.0, "max_retries": 0, "max_tokens": 48, "temperature": 0.0, "seed": 1, **options}
        return OpenAICompatibleModel(model=self.model, base_url=self.base_url, api_key="not-needed", **options)


def model_server_is_required() -> bool:
    return os.environ.get("ANVIA_REQUIRE_MODEL_SERVER") == "1" or os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def model_server() -> ModelServer:
    url = os.environ.get("ANVIA_MODEL_SERVER_URL", "").rstrip("/")
    if not url:
        message = (
            "ANVIA_MODEL_SERVER_URL is unset: start a real model server with "
            "`url=$(scripts/model_server.sh)` and run with ANVIA_MODEL_SERVER_URL=$url."
        )
        if model_server_is_required():
            pytest.fail(f"The real-model tests are required here (ANVIA_REQUIRE_MODEL_SERVER=1 or CI=true). {message}")
        pytest.skip(message)
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=10) as response:  # noqa: S310 (a URL we were given)
            models = json.load(response)["data"]
    except OSError as error:
        pytest.fail(f"ANVIA_MODEL_SERVER_URL={url} does not answer GET /models: {error}")
    return ModelServer(base_url=url, model=models[0]["id"])


_usage = {"runs": 0, "model_calls": 0}


def record_usage(*, runs: int, model_calls: int) -> None:
    """Count what the app's runs asked of the real server, for the summary at the end."""
    _usage["runs"] += runs
    _usage["model_calls"] += model_calls


def pytest_terminal_summary(terminalreporter) -> None:
    if _usage["runs"]:
        terminalreporter.write_line(
            f"real model server: {_usage['runs']} app runs through a real worker made "
            f"{_usage['model_calls']} model requests"
        )
