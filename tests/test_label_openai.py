"""OpenAICompatibleLabeler against a scripted chat-completions server on 127.0.0.1 (no network, no key)."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fake_chat_server import MODEL, FakeChatServer

from deltalens.labeling.base import (
    Completion,
    GenerativeLabeler,
    LabelerFatalError,
    LabelerUnavailable,
    LabelPrompt,
    TransientLabelerError,
)
from deltalens.labeling.openai_api import OpenAICompatibleLabeler

SECRET = "sk-test-SECRET-0123456789"
FAST_RETRY = {"retry-after-ms": "10"}  # the client honours it instead of its 0.5 s+ backoff


@pytest.fixture
def server():
    with FakeChatServer() as srv:
        yield srv


def make(server: FakeChatServer, *, key: str | None = SECRET, **kw) -> OpenAICompatibleLabeler:
    environ = {"DELTALENS_LLM_BASE_URL": server.base_url, "DELTALENS_LLM_MODEL": MODEL}
    if key is not None:
        environ["DELTALENS_LLM_API_KEY"] = key
    kw.setdefault("timeout", 2.0)
    kw.setdefault("max_retries", 2)
    return OpenAICompatibleLabeler.from_env("fake", environ=environ, **kw)


def prompt(text: str = "Which chunks are relevant?") -> LabelPrompt:
    return LabelPrompt(
        sample_id="s1",
        template="relevance@1",
        messages=({"role": "system", "content": "You label chunks."}, {"role": "user", "content": text}),
        chunk_ids=(1, 2, 3),
        prompt_hash="h",
    )


def test_happy_path_forwards_messages_model_and_key(server):
    lab = make(server, temperature=0.0, max_tokens=321)
    assert isinstance(lab, GenerativeLabeler)
    assert (lab.kind, lab.name, lab.model, lab.max_concurrency) == ("openai", "fake", MODEL, 4)
    p = prompt("chunk 1: foo\nchunk 2: bar")
    out = lab.complete(p)
    assert isinstance(out, Completion)
    assert out.text == "echo: chunk 1: foo\nchunk 2: bar"
    assert (out.prompt_tokens, out.completion_tokens, out.finish_reason) == (11, 7, "stop")
    assert out.seconds > 0
    (req,) = server.chat_requests()
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["json"]["model"] == MODEL
    assert req["json"]["messages"] == [dict(m) for m in p.messages]
    assert req["json"]["temperature"] == 0.0 and req["json"]["max_tokens"] == 321
    assert req["headers"]["authorization"] == f"Bearer {SECRET}"


def test_no_key_sends_placeholder_and_empty_content_is_empty_text(server):
    lab = make(server, key=None)
    assert lab.describe()["api_key_set"] is False
    server.script = [{"body": {"id": "x", "object": "chat.completion", "created": 0, "model": MODEL,
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": None},
                                            "finish_reason": "length"}]}}]
    out = lab.complete(prompt())
    assert out.text == "" and out.finish_reason == "length"
    assert out.prompt_tokens is None and out.completion_tokens is None  # no usage in the body
    assert server.requests[0]["headers"]["authorization"] == "Bearer not-needed"


def test_rate_limit_then_success(server):
    server.script = [{"status": 429, "headers": FAST_RETRY}]
    out = make(server).complete(prompt("x"))
    assert out.text == "echo: x"
    assert len(server.chat_requests()) == 2


def test_server_errors_then_success(server):
    server.script = [{"status": 500, "headers": FAST_RETRY}, {"status": 503, "headers": FAST_RETRY}]
    out = make(server, max_retries=2).complete(prompt("y"))
    assert out.text == "echo: y"
    assert len(server.chat_requests()) == 3


def test_slow_answer_times_out_and_is_retried(server):
    server.script = [{"delay": 1.5}]
    lab = make(server, timeout=0.5, max_retries=1)
    out = lab.complete(prompt("z"))
    assert out.text == "echo: z"
    assert len(server.chat_requests()) == 2
    assert out.seconds >= 0.5  # the wall time includes the timed-out attempt


def test_timeout_exhausted_is_transient(server):
    server.default_delay = 1.0
    with pytest.raises(TransientLabelerError, match="timed out"):
        make(server, timeout=0.3, max_retries=0).complete(prompt())
    assert len(server.chat_requests()) == 1


def test_persistent_server_error_is_transient_after_retries(server):
    server.script = [{"status": 500, "headers": FAST_RETRY}] * 5
    lab = make(server, max_retries=1)
    with pytest.raises(TransientLabelerError) as err:
        lab.complete(prompt())
    msg = str(err.value)
    assert "500" in msg and MODEL in msg and server.base_url in msg
    assert len(server.chat_requests()) == 2


def test_refused_key_is_fatal_and_never_leaks(server):
    # the server echoes the key, as some do; the labeler must mask it
    server.script = [{"status": 401, "body": {"error": {"message": f"Incorrect API key provided: {SECRET}",
                                                        "type": "invalid_request_error",
                                                        "code": "invalid_api_key"}}}]
    lab = make(server)
    with pytest.raises(LabelerFatalError) as err:
        lab.complete(prompt())
    msg = str(err.value)
    assert "DELTALENS_LLM_API_KEY" in msg and server.base_url in msg and "401" in msg
    assert SECRET not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained error carrying headers
    assert SECRET not in repr(lab) and SECRET not in str(lab)
    assert SECRET not in json.dumps(lab.describe())
    assert lab.describe()["api_key_set"] is True
    assert len(server.chat_requests()) == 1  # not retried


def test_forbidden_is_fatal(server):
    server.script = [{"status": 403}]
    with pytest.raises(LabelerFatalError, match="DELTALENS_LLM_API_KEY"):
        make(server).complete(prompt())


def test_no_balance_is_fatal(server):
    server.script = [{"status": 402, "body": {"error": {"message": "Insufficient Balance"}}}]
    with pytest.raises(LabelerFatalError, match="Insufficient Balance"):
        make(server).complete(prompt())
    assert len(server.chat_requests()) == 1


def test_unknown_model_404_is_fatal(server):
    server.script = [{"status": 404, "body": {"error": {"message": f"The model `{MODEL}` does not exist."}}}]
    with pytest.raises(LabelerFatalError) as err:
        make(server).complete(prompt())
    msg = str(err.value)
    assert MODEL in msg and "DELTALENS_LLM_MODEL" in msg and server.base_url in msg
    assert len(server.chat_requests()) == 1


def test_400_about_model_is_fatal_but_context_length_is_not(server):
    server.script = [{"status": 400, "body": {"error": {"message": "Model Not Exist"}}}]
    with pytest.raises(LabelerFatalError, match=MODEL):
        make(server).complete(prompt())
    server.script = [{"status": 400, "body": {"error": {
        "message": "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."}}}]
    with pytest.raises(TransientLabelerError, match="400"):
        make(server).complete(prompt())


def test_from_env_nothing_set_names_the_variables():
    with pytest.raises(LabelerUnavailable) as err:
        OpenAICompatibleLabeler.from_env("deepseek-v3", env_prefix="DEEPSEEK", environ={})
    msg = str(err.value)
    assert "deepseek-v3" in msg
    for var in ("DEEPSEEK_BASE_URL", "DEEPSEEK_MODEL", "DEEPSEEK_API_KEY"):
        assert var in msg
    with pytest.raises(LabelerUnavailable) as err:
        OpenAICompatibleLabeler.from_env("x", environ={"DELTALENS_LLM_BASE_URL": "http://h/v1"})
    assert "DELTALENS_LLM_MODEL" in str(err.value) and "DELTALENS_LLM_BASE_URL" not in str(err.value)


def test_from_env_custom_prefix_and_explicit_overrides(server):
    environ = {"DEEPSEEK_BASE_URL": "http://127.0.0.1:9/unused", "DEEPSEEK_MODEL": "deepseek-chat",
               "DEEPSEEK_API_KEY": "sk-ds", "DELTALENS_LLM_API_KEY": "wrong-prefix"}
    lab = OpenAICompatibleLabeler.from_env("deepseek-v3", env_prefix="DEEPSEEK", base_url=server.base_url,
                                           environ=environ, max_concurrency=2, timeout=2.0, max_retries=0)
    d = lab.describe()
    assert d == {**d, "name": "deepseek-v3", "kind": "openai", "model": "deepseek-chat",
                 "base_url": server.base_url, "env_prefix": "DEEPSEEK", "api_key_set": True,
                 "max_retries": 0, "timeout": 2.0, "max_concurrency": 2}
    assert lab.complete(prompt("q")).text == "echo: q"
    req = server.chat_requests()[0]
    assert req["json"]["model"] == "deepseek-chat"
    assert req["headers"]["authorization"] == "Bearer sk-ds"


def test_check_lists_models_and_tolerates_missing_models_endpoint(server):
    lab = make(server)
    assert lab.check() == [MODEL, "other-model"]
    assert server.requests[-1]["method"] == "GET" and server.requests[-1]["path"] == "/v1/models"
    server.script = [{"status": 404, "body": {"error": {"message": "no /models here"}}}]
    assert lab.check() is None  # answered, so reachable


def test_check_refused_key_is_fatal(server):
    server.script = [{"status": 401}]
    with pytest.raises(LabelerFatalError, match="DELTALENS_LLM_API_KEY"):
        make(server).check()


def test_check_unreachable_endpoint_is_fatal():
    with socket.socket() as s:  # a port that was free a moment ago and is now closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    lab = OpenAICompatibleLabeler.from_env("local", base_url=url, model="m", environ={},
                                           timeout=0.5, max_retries=0)
    t0 = time.perf_counter()
    with pytest.raises(LabelerFatalError) as err:
        lab.check()
    assert time.perf_counter() - t0 < 3
    msg = str(err.value)
    assert url in msg and "DELTALENS_LLM_BASE_URL" in msg and "connect" in msg


def test_concurrent_calls_all_succeed(server):
    server.default_delay = 0.2
    lab = make(server, max_concurrency=4)
    texts = [f"prompt {i}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=lab.max_concurrency) as pool:
        outs = list(pool.map(lambda t: lab.complete(prompt(t)), texts))
    assert [o.text for o in outs] == [f"echo: {t}" for t in texts]
    assert len(server.chat_requests()) == 8
    assert server.peak_in_flight >= 2  # requests really overlapped
