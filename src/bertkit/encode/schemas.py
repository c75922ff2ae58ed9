"""What `bertkit serve` reads and writes: a pydantic model for every request body and every answer, so
the OpenAPI schema (/openapi.json, /docs) lists each field. bertkit's own API (/encode, /similarity,
/search, /predict/{task}, /health), OpenAI's embeddings API (/v1/embeddings, /v1/models) and
text-embeddings-inference's /embed. The checks that need the model (limits, lengths, names) are the
server's; these models check types and shapes only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

Pooling = Literal["cls", "mean", "max", "pooler"]
EncodePooling = Literal["cls", "mean", "max", "pooler", "none"]  # none: a vector per token


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    """Every 4xx, and a 5xx: what went wrong and what to send instead."""

    error: str = Field(description="what went wrong, and how to fix the request")


class OpenAIError(BaseModel):
    message: str = Field(description="what went wrong, and how to fix the request")
    type: Literal["invalid_request_error", "authentication_error", "server_error"]
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """An error under /v1/, in OpenAI's shape: its clients show `error.message` in their exceptions."""

    error: OpenAIError


# --- bertkit's own endpoints --------------------------------------------------------------------------


class EncodeRequest(_Body):
    texts: list[str] = Field(description="the texts to encode")
    pooling: EncodePooling | None = Field(
        None, description='default: the model\'s; "none": a vector per token (or per word, with `words`)'
    )
    layer: int | list[int] | None = Field(
        None,
        description="hidden layer: -1 the last, 0 the embeddings; several, e.g. [-4, -3, -2, -1], are joined "
        "by `layer_combine`",
    )
    layer_combine: Literal["concat", "mean"] | None = Field(
        None, description="several layers: concat (width H x layers, in the given order) or mean; default concat"
    )
    normalize: bool | None = Field(None, description='L2-normalise (default: the model\'s; not with "none")')
    words: bool = Field(
        False,
        description='with pooling "none": a vector per whitespace-separated word and Chinese character, '
        "the mean of its word pieces'",
    )
    specials: bool = Field(False, description='with pooling "none": keep [CLS] and [SEP] (span [0, 0])')
    encoding: Literal["float", "base64"] = Field("float", description="base64: little-endian float32, row-major")


class TokenResult(BaseModel):
    tokens: list[str] = Field(description="the word pieces as the model read them, or the words with `words`")
    spans: list[tuple[int, int]] = Field(
        description="[start, end) character span of each in the text as sent: text[start:end]"
    )
    vectors: list[list[float]] | str = Field(
        description='one vector per token: the raw hidden states; with "encoding": "base64" one string'
    )
    shape: list[int] = Field(description="[tokens, dimensions]")


class EncodeResponse(BaseModel):
    vectors: list[list[float]] | str | None = Field(
        None,
        description='one vector per text; with "encoding": "base64" one string of little-endian float32, row-major',
    )
    shape: list[int] | None = Field(None, description="[texts, dimensions]")
    results: list[TokenResult] | None = Field(None, description='with pooling "none" (instead of `vectors`): per text')
    dtype: Literal["float32"] = Field("float32", description="the vectors' number type")


class SimilarityRequest(_Body):
    pairs: list[tuple[str, str]] | None = Field(None, description="[[a, b], ...] -> one score per pair")
    query: str | None = Field(None, description="with `texts`: the score of each text against the query")
    texts: list[str] | None = None
    pooling: Pooling | None = None
    layer: int | None = None


class SimilarityResponse(BaseModel):
    scores: list[float] = Field(description="cosine similarity, one per pair or per text, in request order")


class PairInput(_Body):
    text: str | None = None
    text_b: str | None = None
    question: str | None = None
    context: str | None = None
    source: str | None = Field(None, description="seq2seq: the source text")
    id: str | None = None


class PredictRequest(_Body):
    texts: list[str] | None = Field(None, description="classify / ner: one text per input")
    inputs: list[PairInput] | None = Field(
        None, description='[{"text", "text_b"}], qa: [{"question", "context"}], seq2seq: [{"source"}]'
    )


class PredictResponse(BaseModel):
    predictions: list[dict[str, Any]] = Field(
        description="one per input, in order, as `bertkit predict` writes them: the input's fields and "
        "classify: label, probabilities; ner: tags, entities (type, text, start, end); qa: answer, start, end"
    )


class GenerateRequest(_Body):
    sources: list[str] = Field(description="the source texts; one generated target each")
    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    max_new_tokens: int = Field(64, ge=1, le=512, description="target tokens at most ([SEP] not counted)")
    num_beams: int = Field(4, ge=1, le=16, description="beam: hypotheses kept each step")
    length_penalty: float = Field(1.0, description="beam: a finished target scores log-prob / length^this")
    no_repeat_ngram: int = Field(0, ge=0, description="never repeat an n-gram of this size (0: allowed)")
    temperature: float = Field(1.0, gt=0, description="sample: divide the logits by this")
    top_k: int = Field(0, ge=0, description="sample: draw from the k most likely tokens only (0: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="sample: draw from the fewest tokens holding this probability")
    seed: int = Field(0, ge=0, description="sample: the random seed")


class Generated(BaseModel):
    generated: str
    tokens: int = Field(description="target tokens, [SEP] not counted")
    stopped: Literal["sep", "length"] = Field(description="sep: the model ended the target; length: max_new_tokens")


class GenerateResponse(BaseModel):
    generated: list[Generated]


class SearchRequest(_Body):
    query: str | None = Field(None, description="one query")
    queries: list[str] | None = Field(None, description="several queries, one result each, in order")
    k: int = Field(10, description="hits per query, 1 to 1000 (fewer when the index holds fewer)")
    exact: bool = Field(False, description="score every vector, even when the index has an approximate part")


class SearchHit(BaseModel):
    row: int = Field(description="the text's position in the indexed file, from 0")
    score: float = Field(description="inner product with the query: cosine similarity for normalised vectors")
    id: str | None = Field(None, description="the text's id, when the indexed file gave ids")
    text: str | None = Field(None, description="the text, when the index keeps texts")


class SearchResult(BaseModel):
    query: str
    hits: list[SearchHit] = Field(description="best first")


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(description="one per query, in request order, as `bertkit search` writes them")


class EncoderInfo(BaseModel):
    name: str = Field(description="the model's name in the OpenAI-compatible API")
    pooling: str | None = None
    layer: int | list[int] | None = None
    layer_combine: str | None = None
    normalize: bool | None = None
    dim: int | None = Field(None, description="the vectors' dimensions")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    tasks: dict[str, str] = Field(description="served name -> task (classify, ner, qa, ...)")
    queue_depth: int = Field(description="texts waiting to be batched, over every model")
    api_key: bool = Field(description="whether requests need `Authorization: Bearer KEY`")
    encoder: EncoderInfo | None = Field(None, description="the sentence-vector model, when one is served")


# --- OpenAI's embeddings API --------------------------------------------------------------------------


_JSON_TYPE = {bool: "true/false", int: "a number", float: "a number", dict: "an object", type(None): "null"}


def text_list(value: Any, field: str) -> Any:
    """Refuse token ids and non-text items in `field` with a message saying what to send; the type
    annotation checks the rest."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (int, list)) and not isinstance(item, bool):
                raise ValueError(
                    f"{field}[{i}] is a token id or a list of them; this server takes text only (its "
                    "WordPiece vocabulary is not OpenAI's tiktoken): send strings. LangChain's "
                    "OpenAIEmbeddings sends token ids unless given check_embedding_ctx_length=False"
                )
            if not isinstance(item, str):
                raise ValueError(f"{field}[{i}] is {_JSON_TYPE.get(type(item), type(item).__name__)}: send strings")
    elif not isinstance(value, str):
        raise ValueError(
            f"{field} is {_JSON_TYPE.get(type(value), type(value).__name__)}: send a string or a list of strings"
        )
    return value


class EmbeddingsRequest(_Body):
    input: str | list[str] = Field(
        description="a text or a list of texts (token-id arrays are refused: the vocabulary is not OpenAI's)"
    )
    model: str | None = Field(None, description="the served model's name (GET /v1/models); default: that one")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: each embedding as little-endian float32 bytes"
    )
    dimensions: int | None = Field(
        None, description="only the model's own dimension: its vectors were not trained to be cut shorter"
    )
    user: str | None = Field(None, description="accepted and ignored")
    truncate: bool = Field(
        False,
        description="bertkit's extension: cut texts over the model's token limit instead of refusing them "
        '(openai client: extra_body={"truncate": True})',
    )

    @field_validator("input", mode="before")
    @classmethod
    def text_only(cls, value: Any) -> Any:
        return text_list(value, "input")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="the text's position in `input`")
    embedding: list[float] | str = Field(description="floats, or a base64 string of little-endian float32")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="tokens the model read, [CLS] and [SEP] included")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str = Field(description="the name to send as `model`")
    object: Literal["model"] = "model"
    created: int = Field(description="when the server loaded the model (Unix time)")
    owned_by: str = "bertkit"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- text-embeddings-inference's /embed -----------------------------------------------------------------


class EmbedRequest(_Body):
    inputs: str | list[str] = Field(description="a text or a list of texts")
    normalize: bool = Field(True, description="L2-normalise the vectors")
    truncate: bool = Field(False, description="cut texts over the model's token limit instead of refusing them (413)")
    truncation_direction: Literal["Left", "Right"] = Field("Right", description="Right only: the end of a text is cut")
    prompt_name: str | None = Field(None, description="unsupported: prepend the prompt to each text instead")
    dimensions: int | None = Field(None, description="only the model's own dimension")

    @field_validator("inputs", mode="before")
    @classmethod
    def text_only(cls, value: Any) -> Any:
        return text_list(value, "inputs")


class EmbedResponse(RootModel[list[list[float]]]):
    """One vector per input text, in order (a single string gives a list of one)."""
