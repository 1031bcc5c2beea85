"""A generative labeler that talks to any OpenAI-compatible chat-completions endpoint.

Configuration comes from environment variables with a prefix (default ``DELTALENS_LLM``)::

    {PREFIX}_BASE_URL   the endpoint, ending where ``/chat/completions`` is appended (usually ``.../v1``)
    {PREFIX}_MODEL      the model id the server knows
    {PREFIX}_API_KEY    the key, read from the environment only (never a parameter, never saved); local servers
                        need none

Typical setups (``name`` and prefix are free; the labeler name is what the answer store and tables show)::

    # DeepSeek-V3 (hosted)
    export DEEPSEEK_BASE_URL=https://api.deepseek.com DEEPSEEK_MODEL=deepseek-chat DEEPSEEK_API_KEY=sk-...
    OpenAICompatibleLabeler.from_env("deepseek-v3", env_prefix="DEEPSEEK")

    # vLLM:  vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000
    export DELTALENS_LLM_BASE_URL=http://localhost:8000/v1 DELTALENS_LLM_MODEL=Qwen/Qwen2.5-7B-Instruct

    # Ollama:  ollama pull qwen2.5:7b  (no key needed)
    export DELTALENS_LLM_BASE_URL=http://localhost:11434/v1 DELTALENS_LLM_MODEL=qwen2.5:7b

    # llama.cpp server:  llama-server -m model.gguf --port 8080  (serves one model; any model name is accepted)
    export DELTALENS_LLM_BASE_URL=http://localhost:8080/v1 DELTALENS_LLM_MODEL=local

Explicit ``base_url`` / ``model`` arguments to :meth:`OpenAICompatibleLabeler.from_env` override the variables.

Errors: rate limits (429), timeouts, connection errors and 5xx are retried by the ``openai`` client itself
(exponential backoff, honouring ``retry-after`` / ``retry-after-ms``); once ``max_retries`` are spent,
:class:`TransientLabelerError`. A refused key (401/403), an unknown model or endpoint (404, or a 400 about the
model) or an exhausted account balance (402, 429 ``insufficient_quota``) raise :class:`LabelerFatalError`.
Call :meth:`OpenAICompatibleLabeler.check` once before a batch to fail fast on an unreachable endpoint.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import openai
from openai import OpenAI

from .base import Completion, LabelerFatalError, LabelerUnavailable, LabelPrompt, TransientLabelerError

log = logging.getLogger(__name__)

DEFAULT_ENV_PREFIX = "DELTALENS_LLM"
NO_KEY_PLACEHOLDER = "not-needed"  # sent as the bearer token when no key is set (Ollama, llama.cpp, vLLM)

# A 400 whose message says the model is unknown (DeepSeek: "Model Not Exist"); context-length errors also say
# "model", so only these phrases count.
_UNKNOWN_MODEL_RE = re.compile(
    r"model[^.]{0,80}?\b(not exist|does not exist|not found|unknown|invalid|not supported|unsupported)"
    r"|\b(unknown|invalid|unsupported|no such) model",
    re.IGNORECASE,
)


def _env(environ: Mapping[str, str], key: str) -> str | None:
    """A stripped environment value, None when unset or blank."""
    value = environ.get(key)
    value = value.strip() if value is not None else None
    return value or None


class OpenAICompatibleLabeler:
    """:class:`~deltalens.labeling.base.GenerativeLabeler` backed by an OpenAI-compatible chat-completions API.

    The key is read from ``environ[f"{env_prefix}_API_KEY"]`` (``os.environ`` by default) and handed only to the
    ``openai`` client; it never appears in ``repr``, :meth:`describe`, errors or completions. One client is shared
    by all threads (the client is thread-safe), so ``complete`` may run from ``max_concurrency`` threads at once.
    """

    kind: str = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        *,
        env_prefix: str = DEFAULT_ENV_PREFIX,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 4,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not base_url or not model:
            raise LabelerUnavailable(f"labeler {name!r}: base_url and model are required")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        environ = os.environ if environ is None else environ
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.env_prefix = env_prefix
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        key = _env(environ, self.key_var)
        self.key_set = key is not None
        self._client = OpenAI(
            api_key=key or NO_KEY_PLACEHOLDER,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @classmethod
    def from_env(
        cls,
        name: str,
        env_prefix: str = DEFAULT_ENV_PREFIX,
        base_url: str | None = None,
        model: str | None = None,
        *,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 4,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        environ: Mapping[str, str] | None = None,
    ) -> OpenAICompatibleLabeler:
        """Build from ``{env_prefix}_BASE_URL`` / ``_MODEL`` / ``_API_KEY``; explicit ``base_url`` / ``model`` win.

        Raises :class:`LabelerUnavailable` naming the variables to set when base URL or model is missing.
        """
        environ = os.environ if environ is None else environ
        base_url = base_url or _env(environ, f"{env_prefix}_BASE_URL")
        model = model or _env(environ, f"{env_prefix}_MODEL")
        missing = [var for var, value in (("BASE_URL", base_url), ("MODEL", model)) if not value]
        if missing:
            names = " and ".join(f"{env_prefix}_{var}" for var in missing)
            key_hint = "" if _env(environ, f"{env_prefix}_API_KEY") else f" (and {env_prefix}_API_KEY)"
            raise LabelerUnavailable(f"labeler {name!r}: set {names}{key_hint} to enable it")
        assert base_url is not None and model is not None
        return cls(
            name,
            base_url,
            model,
            env_prefix=env_prefix,
            max_concurrency=max_concurrency,
            timeout=timeout,
            max_retries=max_retries,
            temperature=temperature,
            max_tokens=max_tokens,
            environ=environ,
        )

    @property
    def key_var(self) -> str:
        """Name of the environment variable holding the key."""
        return f"{self.env_prefix}_API_KEY"

    def describe(self) -> dict[str, Any]:
        """Settings safe to save next to results (no key, only whether one is set)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "base_url": self.base_url,
            "env_prefix": self.env_prefix,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "max_concurrency": self.max_concurrency,
            "api_key_set": self.key_set,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r}, "
            f"env_prefix={self.env_prefix!r}, api_key_set={self.key_set})"
        )

    __str__ = __repr__

    # ------------------------------------------------------------------ requests

    def complete(self, prompt: LabelPrompt) -> Completion:
        """Send ``prompt.messages``; return the answer text (``""`` when the server gave no content)."""
        start = time.perf_counter()
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=[dict(m) for m in prompt.messages],
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except openai.APIError as exc:
            raise self._translate(exc, "/chat/completions") from None
        seconds = time.perf_counter() - start
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise TransientLabelerError(
                f"labeler {self.name!r}: {self.base_url}/chat/completions returned no chat completion "
                f"(model {self.model!r})"
            )
        choice = choices[0] if choices else None
        message = getattr(choice, "message", None)
        usage = getattr(response, "usage", None)
        return Completion(
            text=getattr(message, "content", None) or "",
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            seconds=seconds,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    def check(self) -> list[str] | None:
        """One cheap request (``GET /models``) to fail fast before a batch.

        Raises :class:`LabelerFatalError` when the endpoint cannot be reached at all (after the client's retries)
        or refuses the key. A server without ``/models`` still counts as reachable when it answered anything.
        Returns the model ids the server lists (None when it lists none); logs a warning when the configured
        model is not among them (llama.cpp, for one, accepts any model name).
        """
        try:
            page = self._client.models.list()
            ids = [m.id for m in getattr(page, "data", None) or [] if getattr(m, "id", None)]
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._translate(exc, "/models") from None
        except openai.APIConnectionError as exc:
            kind = "timed out" if isinstance(exc, openai.APITimeoutError) else "could not connect"
            raise LabelerFatalError(
                f"labeler {self.name!r}: {kind} to {self.base_url} after {self.max_retries} retries "
                f"(timeout {self.timeout:g} s); is the server running? check {self.env_prefix}_BASE_URL"
            ) from None
        except openai.APIStatusError as exc:  # the server answered, just not to /models
            log.info("labeler %r: %s/models answered HTTP %s; treating endpoint as reachable",
                     self.name, self.base_url, exc.status_code)
            return None
        except openai.APIError as exc:  # a non-JSON answer to /models: reachable too
            log.info("labeler %r: %s/models gave an unexpected answer (%s); treating endpoint as reachable",
                     self.name, self.base_url, type(exc).__name__)
            return None
        if ids and self.model not in ids:
            log.warning("labeler %r: model %r is not among the models %s lists: %s",
                        self.name, self.model, self.base_url, ", ".join(ids[:10]))
        return ids or None

    # ------------------------------------------------------------------ errors

    def _server_message(self, exc: openai.APIError) -> str:
        """The server's error message, shortened and with the key masked (some servers echo it)."""
        text = str(getattr(exc, "message", "") or exc)
        key = self._client.api_key if self.key_set else None
        if isinstance(key, str) and key:
            text = text.replace(key, "***")
        text = re.sub(r"^Error code: \d+ - ", "", " ".join(text.split()))
        return text[:300] + ("..." if len(text) > 300 else "")

    def _translate(self, exc: openai.APIError, path: str) -> Exception:
        """Map an ``openai`` error (after the client's own retries) to a labeler error."""
        endpoint = f"{self.base_url}{path}"
        where = f"labeler {self.name!r} (model {self.model!r}, {endpoint})"
        if isinstance(exc, openai.APITimeoutError):
            return TransientLabelerError(
                f"{where}: timed out after {self.timeout:g} s, {self.max_retries} retries spent"
            )
        if isinstance(exc, openai.APIConnectionError):
            return TransientLabelerError(
                f"{where}: could not connect after {self.max_retries} retries; check {self.env_prefix}_BASE_URL"
            )
        if not isinstance(exc, openai.APIStatusError):
            return TransientLabelerError(f"{where}: unexpected answer ({type(exc).__name__})")
        status = exc.status_code
        detail = self._server_message(exc)
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            state = "the key in" if self.key_set else "no key was set in"
            return LabelerFatalError(
                f"labeler {self.name!r}: {state} {self.key_var} was refused by {self.base_url} "
                f"(HTTP {status}: {detail})"
            )
        if status == 402 or getattr(exc, "code", None) == "insufficient_quota":
            return LabelerFatalError(f"{where}: account has no balance or quota left (HTTP {status}: {detail})")
        if isinstance(exc, openai.NotFoundError) or (status == 400 and _UNKNOWN_MODEL_RE.search(detail)):
            return LabelerFatalError(
                f"{where}: model or endpoint not found (HTTP {status}: {detail}); "
                f"check {self.env_prefix}_MODEL (and {self.env_prefix}_BASE_URL, usually ending in /v1)"
            )
        if status == 429 or status >= 500 or status in (408, 409):
            return TransientLabelerError(f"{where}: HTTP {status} after {self.max_retries} retries: {detail}")
        # other 4xx (e.g. a prompt over the context length): this prompt fails, the run goes on
        return TransientLabelerError(f"{where}: request rejected (HTTP {status}: {detail})")
