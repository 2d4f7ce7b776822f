"""The wire format: request bodies (pydantic), the error every route answers with, and response builders.

Requests follow the clients people already have: Hugging Face text-embeddings-inference (TEI) for
``/embed`` and ``/predict``, OpenAI for ``/v1/embeddings``. Unknown extra fields are ignored, as
both servers do, so a client sending e.g. TEI's ``prompt_name`` or OpenAI's ``user`` still works.
"""
from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

Texts = Annotated[list[StrictStr], Field(min_length=1)]
TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]


class ServeError(Exception):
    """A request the server refuses: HTTP ``status``, a short machine ``kind`` and one clear line."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class EmbedRequest(BaseModel):
    """TEI ``POST /embed``: ``{"inputs": "text" | ["a", "b"], "normalize": true, "truncate": false}``."""

    model_config = ConfigDict(extra="ignore")
    inputs: StrictStr | Texts
    normalize: StrictBool = True
    truncate: StrictBool | None = None  #: None: the server's --auto-truncate


class PredictRequest(BaseModel):
    """TEI ``POST /predict``: ``{"inputs": "text" | ["a", "b"], "raw_scores": false, "truncate": false}``."""

    model_config = ConfigDict(extra="ignore")
    inputs: StrictStr | Texts
    raw_scores: StrictBool = False
    truncate: StrictBool | None = None


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI ``POST /v1/embeddings``: ``input`` is text, texts, token ids or lists of token ids."""

    model_config = ConfigDict(extra="ignore")
    input: StrictStr | Texts | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None


#: what each field accepts, for the one-line error when a body does not validate
FIELD_HINTS = {
    "inputs": "a string or a non-empty list of strings",
    "input": "a string, a non-empty list of strings, a list of token ids, or a list of token-id lists",
    "normalize": "true or false",
    "truncate": "true or false",
    "raw_scores": "true or false",
    "encoding_format": "'float' or 'base64'",
    "dimensions": "an integer (this model's embedding size)",
    "model": "a string",
}


def tei_error(message: str, kind: str) -> dict:
    """TEI's error body."""
    return {"error": message, "error_type": kind}


def openai_error(message: str, kind: str) -> dict:
    """OpenAI's error body (what the ``openai`` client parses into its exception)."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def predictions(logits: np.ndarray, labels: list[str], raw_scores: bool) -> list[list[dict]]:
    """TEI ``/predict`` rows: every label with its score (softmax unless ``raw_scores``), best first."""
    scores = np.asarray(logits, np.float64)
    if not raw_scores:
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")
        out.append([{"label": labels[i], "score": float(row[i])} for i in order])
    return out


def openai_embeddings(vectors: np.ndarray, encoding_format: str, model: str, tokens: int) -> dict:
    """OpenAI's embedding list; ``base64`` is the little-endian float32 bytes the ``openai`` client decodes."""
    vectors = np.asarray(vectors, dtype="<f4")
    if encoding_format == "base64":
        items = [base64.b64encode(v.tobytes()).decode("ascii") for v in vectors]
    else:
        items = vectors.tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(items)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
