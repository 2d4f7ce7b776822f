"""The real server on loopback, driven by real clients (httpx, openai).

Tolerance: the server runs each text padded to the longest input of its batch, the reference runs it
alone and unpadded, both fp32 on ONNX Runtime. Masked positions add exact zeros, but a different
sequence length can change how the GEMMs block their sums; the reordering error is about fp32
epsilon (1.2e-7) times sqrt(reduction depth) (<= sqrt(128) ~ 11) per layer on values of order 1,
~1e-6 after two layers. 1e-5 bounds it and still catches any row mix-up or masking bug (>= 1e-2).
"""
from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from serve_common import CLS_LABELS, MAX_INPUTS, MAX_LENGTH

ATOL = 1e-5


def reference(model, texts):
    """The session's own outputs, one text at a time, unpadded."""
    from edgekit.data import tokenize

    return np.concatenate([model.session.run(tokenize(model.tokenizer, [t], max_length=MAX_LENGTH, pad_to_max=False))
                           for t in texts])


def samples(url, name):
    """{labels tuple: value} of one metric family read from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) if fam.name == name for s in fam.samples}


def test_embed_matches_the_session(fe_server, texts):
    assert len(texts) > fe_server.cfg.max_batch  # one request split over two session runs
    r = httpx.post(f"{fe_server.url}/embed", json={"inputs": texts})
    assert r.status_code == 200, r.text
    got = np.array(r.json(), dtype=np.float32)
    assert got.shape == (len(texts), 64)
    np.testing.assert_allclose(got, reference(fe_server.model, texts), atol=ATOL)
    one = httpx.post(f"{fe_server.url}/embed", json={"inputs": texts[3]}).json()  # a bare string: still a list of vectors
    assert len(one) == 1
    np.testing.assert_allclose(one[0], got[3], atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_concurrent_requests_share_batches_and_get_their_own_rows(fe_server, texts):
    before = samples(fe_server.url, "edgekit_batch_size")
    ref = reference(fe_server.model, texts)

    async def fire():
        async with httpx.AsyncClient(base_url=fe_server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/embed", json={"inputs": t}) for t in texts))

    replies = asyncio.run(fire())
    assert [r.status_code for r in replies] == [200] * len(texts)
    for i, r in enumerate(replies):  # each request gets the row of its own text back
        np.testing.assert_allclose(r.json()[0], ref[i], atol=ATOL)
    after = samples(fe_server.url, "edgekit_batch_size")
    runs = after[("edgekit_batch_size_count", ())] - before.get(("edgekit_batch_size_count", ()), 0)
    singles = (after[("edgekit_batch_size_bucket", (("le", "1.0"),))]
               - before.get(("edgekit_batch_size_bucket", (("le", "1.0"),)), 0))
    inputs = after[("edgekit_batch_size_sum", ())] - before.get(("edgekit_batch_size_sum", ()), 0)
    assert inputs == len(texts)
    assert runs < len(texts) and singles < runs, f"{len(texts)} concurrent requests ran as {runs} batches"


def test_openai_client_works_unchanged(fe_server, texts):
    from openai import OpenAI

    client = OpenAI(base_url=f"{fe_server.url}/v1", api_key="x", max_retries=0)
    ref = np.array(httpx.post(f"{fe_server.url}/embed", json={"inputs": texts[:4], "normalize": False}).json(),
                   dtype=np.float32)  # the raw session output, as OpenAI returns it
    res = client.embeddings.create(model="tiny-bert", input=texts[:4])  # the client asks for base64 by default
    assert [d.index for d in res.data] == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.array([d.embedding for d in res.data], dtype=np.float32), ref)
    assert res.model == "tiny-bert" and res.object == "list"
    n_tokens = sum(len(r) for r in fe_server.model.encode(texts[:4], truncate=False))
    assert res.usage.prompt_tokens == res.usage.total_tokens == n_tokens

    flt = client.embeddings.create(model="tiny-bert", input=texts[0], encoding_format="float")
    np.testing.assert_array_equal(np.array(flt.data[0].embedding, dtype=np.float32), ref[0])
    # token ids instead of text: the same tokens give the same vector
    ids = fe_server.model.encode([texts[1]], truncate=False)[0].tolist()
    by_ids = client.embeddings.create(model="tiny-bert", input=[ids], encoding_format="float")
    np.testing.assert_allclose(by_ids.data[0].embedding, ref[1], atol=ATOL)
    assert by_ids.usage.prompt_tokens == len(ids)


def test_predict_returns_every_label_sorted(cls_server, texts):
    logits = reference(cls_server.model, texts[:3])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    rows = httpx.post(f"{cls_server.url}/predict", json={"inputs": texts[:3]}).json()
    assert len(rows) == 3
    for row, p in zip(rows, probs):
        assert sorted(d["label"] for d in row) == sorted(CLS_LABELS)  # names from the manifest, not LABEL_i
        scores = [d["score"] for d in row]
        assert scores == sorted(scores, reverse=True)
        np.testing.assert_allclose([d["score"] for d in sorted(row, key=lambda d: CLS_LABELS.index(d["label"]))],
                                   p, atol=ATOL)
    single = httpx.post(f"{cls_server.url}/predict", json={"inputs": texts[0]}).json()  # a bare string: one list
    assert [d["label"] for d in single] == [d["label"] for d in rows[0]]
    raw = httpx.post(f"{cls_server.url}/predict", json={"inputs": texts[0], "raw_scores": True}).json()
    assert max(d["score"] for d in raw) == pytest.approx(float(logits[0].max()), abs=ATOL)


def test_health_info_and_metrics(fe_server):
    health = httpx.get(f"{fe_server.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = httpx.get(f"{fe_server.url}/info").json()
    assert info["max_input_length"] == MAX_LENGTH and info["dim"] == 64 and info["task"] == "feature-extraction"
    r = httpx.get(f"{fe_server.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    from prometheus_client.parser import text_string_to_metric_families

    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {"edgekit_requests", "edgekit_errors", "edgekit_request_duration_seconds", "edgekit_batch_size",
            "edgekit_queue_depth"} <= names
    assert all(n.startswith("edgekit_") for n in names)
    ok = samples(fe_server.url, "edgekit_requests")
    assert ok[("edgekit_requests_total", (("route", "/health"), ("status", "200")))] >= 1


LONG = "word " * (MAX_LENGTH * 2)

BAD = [  # (method, route, body or raw bytes, status, kind)
    ("post", "/embed", b'{"inputs": ', 400, "invalid_json"),
    ("post", "/embed", {"inputs": 5}, 422, "invalid_request"),
    ("post", "/embed", {"inputs": ["a", 3]}, 422, "invalid_request"),
    ("post", "/embed", {"inputs": []}, 422, "invalid_request"),
    ("post", "/embed", {"text": "a"}, 422, "invalid_request"),
    ("post", "/embed", [1, 2], 422, "invalid_request"),
    ("post", "/embed", {"inputs": "a", "normalize": "yes"}, 422, "invalid_request"),
    ("post", "/embed", {"inputs": ["a"] * (MAX_INPUTS + 1)}, 413, "too_many_inputs"),
    ("post", "/embed", {"inputs": ["short", LONG]}, 413, "input_too_long"),
    ("post", "/predict", {"inputs": "a"}, 400, "wrong_task"),
    ("post", "/v1/embeddings", {"input": "a", "model": "m", "encoding_format": "int8"}, 422, "invalid_request"),
    ("post", "/v1/embeddings", {"input": "a", "model": "m", "dimensions": 3}, 400, "invalid_dimensions"),
    ("post", "/v1/embeddings", {"input": [[101, 10 ** 9]], "model": "m"}, 400, "invalid_token_id"),
    ("post", "/v1/embeddings", {"input": [[101, -1]], "model": "m"}, 422, "invalid_request"),
    ("post", "/v1/embeddings", {"input": [list(range(MAX_LENGTH + 1))], "model": "m"}, 413, "input_too_long"),
    ("get", "/embed", None, 405, "method_not_allowed"),
    ("get", "/no/such/route", None, 404, "not_found"),
]


@pytest.mark.parametrize("method, route, body, status, kind", BAD, ids=[f"{b[1]}-{b[4]}-{i}" for i, b in enumerate(BAD)])
def test_bad_request_is_a_json_4xx_and_the_server_stays_up(fe_server, method, route, body, status, kind):
    if isinstance(body, bytes):
        r = httpx.request(method, f"{fe_server.url}{route}", content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.request(method, f"{fe_server.url}{route}", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    if route.startswith("/v1/"):  # OpenAI's shape, which its client turns into an exception with this message
        assert err["code"] == kind and err["type"] == "invalid_request_error" and err["message"]
    else:  # TEI's shape
        assert r.json()["error_type"] == kind and isinstance(err, str) and err
    assert httpx.post(f"{fe_server.url}/embed", json={"inputs": "still here"}).status_code == 200
    assert samples(fe_server.url, "edgekit_errors")[("edgekit_errors_total", (("kind", kind), ("route", route if route in (
        "/embed", "/predict", "/v1/embeddings") else "other")))] >= 1


def test_truncate_serves_long_inputs_as_their_first_tokens(fe_server):
    cut = httpx.post(f"{fe_server.url}/embed", json={"inputs": LONG, "truncate": True})
    assert cut.status_code == 200
    exact = "word " * (MAX_LENGTH - 2)  # [CLS] + MAX_LENGTH - 2 words + [SEP]: what truncation keeps
    np.testing.assert_allclose(cut.json()[0], httpx.post(f"{fe_server.url}/embed", json={"inputs": exact}).json()[0],
                               atol=ATOL)


def test_openai_client_sees_a_clear_error(fe_server):
    import openai

    client = openai.OpenAI(base_url=f"{fe_server.url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError, match="longer than the model's maximum") as info:
        client.embeddings.create(model="m", input=LONG, encoding_format="float")
    assert info.value.status_code == 413


def test_classifier_refuses_embeddings(cls_server):
    r = httpx.post(f"{cls_server.url}/v1/embeddings", json={"input": "a", "model": "m"})
    assert r.status_code == 400 and "use /predict" in r.json()["error"]["message"]
