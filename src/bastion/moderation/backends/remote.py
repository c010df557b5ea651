"""The `openai` backend: scores from a remote OpenAI-compatible `POST {base_url}/moderations`.

The remote can be OpenAI itself or another Bastion. Texts go in arrays of `batch_size`; each result's
`category_scores` is mapped back onto the 13 categories (missing ones count 0, unknown keys are
ignored). 429, 5xx and connection failures are retried with exponential backoff; httpx errors are
translated once, here, into `BackendTimeout` and `BackendError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bastion.core.errors import BackendError, BackendTimeout, ConfigError
from bastion.core.settings import Settings
from bastion.core.taxonomy import CATEGORY_KEYS, zero_scores
from bastion.moderation.backends.base import BackendScores, ModerationBackend, moderation_backends

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 8.0


class RemoteOptions(BaseModel):
    """Options of the `openai` backend."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://api.openai.com/v1",
        description="API root; requests go to {base_url}/moderations, e.g. http://127.0.0.1:8001/v1.",
    )
    api_key: SecretStr | None = Field(None, description="Bearer key for the remote (kept out of reports).")
    api_key_env: str | None = Field(
        None, description="Name of an environment variable holding the key, read when the backend starts."
    )
    model: str | None = Field(None, description="`model` sent with each request; omitted when unset.")
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for each HTTP request.")
    max_retries: int = Field(2, ge=0, le=10, description="Retries on 429, 5xx and connection errors.")
    backoff: float = Field(0.5, ge=0, description="First retry delay in seconds; doubles on each retry.")
    batch_size: int = Field(32, ge=1, le=2048, description="Texts per request (sent as an array).")


def _error_detail(response: httpx.Response) -> str:
    """The remote's error message from an OpenAI envelope, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:200]
    return str(body)[:200]


@moderation_backends.register("openai")
class RemoteBackend(ModerationBackend):
    """Scores from a remote OpenAI-compatible moderation endpoint (OpenAI or another Bastion)."""

    Options = RemoteOptions

    def __init__(self, options: BaseModel, settings: Settings) -> None:
        super().__init__(options, settings)
        assert isinstance(options, RemoteOptions)
        self.url = options.base_url.rstrip("/") + "/moderations"
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url {options.base_url!r} must start with http:// or https://")
        key = options.api_key.get_secret_value() if options.api_key is not None else None
        if options.api_key_env:
            key = os.environ.get(options.api_key_env)
            if not key:
                raise ConfigError(
                    f"environment variable {options.api_key_env} (api_key_env) is not set; "
                    "export the remote's API key there or set api_key"
                )
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(headers=headers, timeout=options.timeout)

    @property
    def _opts(self) -> RemoteOptions:
        assert isinstance(self.options, RemoteOptions)
        return self.options

    def score(self, texts: Sequence[str]) -> list[BackendScores]:
        """Scores for each text, fetched `batch_size` texts per request."""
        size = self._opts.batch_size
        results: list[BackendScores] = []
        for start in range(0, len(texts), size):
            results.extend(self._score_batch(list(texts[start : start + size])))
        return results

    def _score_batch(self, batch: list[str]) -> list[BackendScores]:
        payload: dict[str, Any] = {"input": batch}
        if self._opts.model:
            payload["model"] = self._opts.model
        response = self._post(payload)
        try:
            body = response.json()
            items = body["results"]
            if not isinstance(items, list):
                raise TypeError("results is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"{self.url} answered without a moderation `results` list ({exc}); is base_url an "
                "OpenAI-compatible API root (ending in /v1)?"
            ) from exc
        if len(items) != len(batch):
            raise BackendError(f"{self.url} returned {len(items)} results for {len(batch)} inputs")
        return [self._parse_result(item) for item in items]

    def _parse_result(self, item: Any) -> BackendScores:
        scores = zero_scores()
        raw = item.get("category_scores") if isinstance(item, dict) else None
        if not isinstance(raw, dict):
            raise BackendError(f"{self.url} returned a result without `category_scores`")
        for key in CATEGORY_KEYS:
            value = raw.get(key)
            if value is None:
                continue
            try:
                scores[key] = min(1.0, max(0.0, float(value)))
            except (TypeError, ValueError) as exc:
                raise BackendError(f"{self.url} returned a non-numeric score for {key!r}: {value!r}") from exc
        # The remote applies its own thresholds: its `categories` are its verdicts, and we keep them.
        verdicts = item.get("categories")
        flags = None
        if isinstance(verdicts, dict):
            flags = {key: verdicts.get(key) is True for key in CATEGORY_KEYS}
        return BackendScores(scores=scores, flags=flags)

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        """POST with retries; every httpx failure leaves here as a Bastion error."""
        opts = self._opts
        attempt = 0
        while True:
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.TimeoutException as exc:
                raise BackendTimeout(
                    f"{self.url} did not answer within {opts.timeout:g} s; raise the backend's `timeout` "
                    "option or check the remote's load"
                ) from exc
            except httpx.TransportError as exc:
                if attempt < opts.max_retries:
                    attempt += 1
                    self._sleep(attempt, None)
                    continue
                raise BackendError(
                    f"cannot reach {self.url} ({type(exc).__name__}: {exc}); check base_url and that the "
                    "remote is running"
                ) from exc
            if response.status_code < 400:
                return response
            if response.status_code in RETRY_STATUS and attempt < opts.max_retries:
                attempt += 1
                self._sleep(attempt, _retry_after(response))
                continue
            raise self._status_error(response)

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        delay = self._opts.backoff * (2 ** (attempt - 1))
        if retry_after is not None:
            delay = max(delay, retry_after)
        time.sleep(min(delay, MAX_BACKOFF_S))

    def _status_error(self, response: httpx.Response) -> BackendError:
        status = response.status_code
        detail = _error_detail(response)
        if status in (401, 403):
            return BackendError(
                f"{self.url} refused the remote API key (HTTP {status}: {detail}); set a valid key in the "
                "backend's api_key or api_key_env"
            )
        if status == 429:
            return BackendError(
                f"{self.url} kept rate-limiting after {self._opts.max_retries} retries (HTTP 429: {detail}); "
                "lower the request rate or raise max_retries"
            )
        if status >= 500:
            return BackendError(
                f"{self.url} failed with HTTP {status} after {self._opts.max_retries} retries: {detail}"
            )
        return BackendError(f"{self.url} rejected the request (HTTP {status}: {detail})")

    def describe(self) -> dict[str, Any]:
        """Plugin and options (the key is masked), plus the URL called."""
        info = super().describe()
        info["url"] = self.url
        return info

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
