"""The texts and vectors of the semantic search benchmark (``memory_search.py``), cached.

Texts: English sentences from the docstrings of this interpreter's standard library
and installed packages (the benchmark environment's site-packages, parsed with ``ast``,
~130k sentences with the bench extra): real prose about many topics, available offline.
6 to 40 words, deduplicated, ordered by a hash so that any prefix is a fair sample;
the list is cached on first use, so later runs use the same texts whatever gets
installed since. Queries are sentences held
out of the corpus, so a query's nearest neighbours are other sentences, as in use.

Vectors: :class:`~mainspring.models.LocalEmbeddings` (all-MiniLM-L6-v2 int8, 384
dimensions, unit length), embedded once in batches and cached as ``.npy`` beside the
texts in ``~/.cache/mainspring-bench/`` (about 1.5 ms of CPU per text: ~2.5 min for
100k on one core).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

CACHE = Path.home() / ".cache" / "mainspring-bench"
QUERY_POOL = 2_000  # sentences held out: queries, and new texts to write
CHUNK = 10_000  # texts per cached file of vectors
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_NOISE = re.compile(r"(>>>|::|\$|\{|\}|=|\\|\|)")

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Corpus:
    texts: list[str]
    vectors: Vectors  # (len(texts), 384), unit rows
    queries: list[str]
    query_vectors: Vectors
    spare: list[str]  # held-out sentences without vectors: new writes
    source: str  # what the texts are, for the report


def _sources() -> list[Path]:
    paths = sysconfig.get_paths()
    stdlib = sorted(Path(paths["stdlib"]).rglob("*.py"))
    packages = sorted(Path(paths["purelib"]).rglob("*.py"))
    return [p for p in stdlib if "site-packages" not in p.parts] + packages


def _sentences() -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for path in _sources():
        if "test" in path.parts or "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(
                node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            ):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for paragraph in doc.split("\n\n"):
                flat = " ".join(paragraph.split())
                for sentence in _SENTENCE_END.split(flat):
                    words = _WORD.findall(sentence)
                    if not 6 <= len(words) <= 40 or _NOISE.search(sentence):
                        continue
                    if sum(len(w) for w in words) < 0.7 * len(sentence.replace(" ", "")):
                        continue  # mostly code or symbols
                    key = sentence.casefold()
                    if key not in seen:
                        seen.add(key)
                        out.append(sentence)
    # A hash order: any prefix is a sample of every module, not of the first ones.
    out.sort(key=lambda s: hashlib.blake2b(s.encode(), digest_size=8).digest())
    return out


def load(n: int, *, queries: int = 1_000, log: bool = True) -> Corpus:
    """``n`` texts and their vectors, ``queries`` held-out query sentences and theirs, and
    held-out sentences without vectors (for writes), all cached."""
    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    CACHE.mkdir(parents=True, exist_ok=True)
    texts_path = CACHE / f"memory_search_{version}_texts.json"
    if texts_path.exists():
        sentences: list[str] = json.loads(texts_path.read_text())
    else:
        sentences = _sentences()
        texts_path.write_text(json.dumps(sentences))
    if len(sentences) < QUERY_POOL + n:
        # Too few sentences: add variants that keep the prose (two joined).
        sentences = _extend(sentences, QUERY_POOL + n)
    texts = sentences[QUERY_POOL : QUERY_POOL + n]
    # Embedded in chunks cached one by one: a long first run can be stopped and resumed,
    # and a smaller corpus is a prefix of a larger one.
    chunks = []
    for start in range(0, n, CHUNK):
        part = texts[start : start + CHUNK]
        name = f"memory_search_chunk{start // CHUNK}_{len(part)}_{digest(part)}.npy"
        chunks.append(_embedded(CACHE / name, part, log))
    pool = sentences[:QUERY_POOL]
    query_vectors = _embedded(
        CACHE / f"memory_search_queries_{queries}_{digest(pool[:queries])}.npy",
        pool[:queries],
        log,
    )
    source = f"{n} docstring sentences of the stdlib and site-packages (Python {version})"
    return Corpus(
        texts, np.concatenate(chunks), pool[:queries], query_vectors, pool[queries:], source
    )


def digest(texts: list[str]) -> str:
    """A short name for a list of texts (cache file names)."""
    return hashlib.blake2b("\n".join(texts).encode(), digest_size=6).hexdigest()


def _extend(sentences: list[str], n: int) -> list[str]:
    out = list(sentences)
    seen = {s.casefold() for s in out}
    i = 0
    while len(out) < n:
        a, b = sentences[i % len(sentences)], sentences[(i * 7 + 3) % len(sentences)]
        joined = f"{a.rstrip('.')}, and {b[0].lower()}{b[1:]}"
        if joined.casefold() not in seen:
            seen.add(joined.casefold())
            out.append(joined)
        i += 1
    return out


def _embedded(path: Path, texts: list[str], log: bool) -> Vectors:
    if path.exists():
        cached: Vectors = np.load(path)
        if cached.shape[0] == len(texts):
            return cached
    from mainspring.models.embeddings_local import LocalEmbeddings

    model = LocalEmbeddings(threads=1)
    out = np.empty((len(texts), model.dimensions), dtype=np.float32)
    start = time.perf_counter()
    step = 1024
    for i in range(0, len(texts), step):
        out[i : i + step] = model.embed_array(texts[i : i + step])
        if log:
            done = min(i + step, len(texts))
            rate = done / (time.perf_counter() - start)
            print(f"embedded {done}/{len(texts)} ({rate:.0f} texts/s)", file=sys.stderr)
    np.save(path, out)
    return out


if __name__ == "__main__":
    # Fill the cache ahead of a run, e.g. in two processes: --chunks 0-4, --chunks 5-9.
    import argparse

    parser = argparse.ArgumentParser(description="embed and cache the W14 corpus")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--chunks", default=None, help="first-last chunk of 10,000 to embed")
    opts = parser.parse_args()
    if opts.chunks is None:
        load(opts.items)
    else:
        first, _, last = opts.chunks.partition("-")
        texts = json.loads(
            (
                CACHE
                / f"memory_search_py{sys.version_info.major}{sys.version_info.minor}_texts.json"
            ).read_text()
        )
        texts = texts[QUERY_POOL : QUERY_POOL + opts.items]
        for k in range(int(first), int(last or first) + 1):
            part = texts[k * CHUNK : (k + 1) * CHUNK]
            _embedded(CACHE / f"memory_search_chunk{k}_{len(part)}_{digest(part)}.npy", part, True)
