"""A small public question-answering set that ships inside a PyPI package.

The wheel of ``allennlp==0.9.0`` (Apache-2.0) carries its test fixtures, among them
real excerpts of five reading-comprehension datasets: SQuAD 1.1 (``squad.json``),
QuAC (``quac_sample.json``), DROP (``drop.json``), Quoref (``quoref/quoref_sample.json``)
and TriviaQA (``triviaqa-sample.tgz``: questions with the Wikipedia and web pages they
were asked about). The data keep their own licences (as their authors publish them:
SQuAD, QuAC and DROP CC BY-SA 4.0, Quoref CC BY 4.0, TriviaQA Apache-2.0 with pages from
Wikipedia, CC BY-SA, and the web). No other package installable here ships a QA set with
its passages (``datasets``, ``beir``, ``ir_datasets``, ``mteb`` download them at run time).

The wheel is fetched once with pip (``pip download allennlp==0.9.0 --no-deps``, no
install: it would need PyTorch) into a cache folder and read as a zip.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "allennlp==0.9.0"
FIXTURES = "allennlp/tests/fixtures/data/"
CACHE = Path.home() / ".cache" / "mainspring-bench"


@dataclass
class Doc:
    id: str
    title: str
    text: str


@dataclass
class Question:
    id: str
    text: str
    docs: set[str]
    answers: list[str] = field(default_factory=list)
    source: str = ""


def wheel(cache: Path = CACHE) -> Path:
    found = sorted(cache.glob("allennlp-0.9.0-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), PACKAGE],
        check=True,
    )
    return sorted(cache.glob("allennlp-0.9.0-*.whl"))[0]


def load(path: Path | None = None) -> tuple[dict[str, Doc], list[Question]]:
    """The passages (and TriviaQA's pages) and the questions about them."""
    docs: dict[str, Doc] = {}
    questions: list[Question] = []
    with zipfile.ZipFile(path or wheel()) as z:

        def read(name: str) -> Any:
            return json.loads(z.read(FIXTURES + name))

        for name, tag in (("squad.json", "squad"), ("quac_sample.json", "quac"),
                          ("quoref/quoref_sample.json", "quoref")):  # fmt: skip
            _squad_format(read(name), tag, docs, questions)
        _drop(read("drop.json"), docs, questions)
        _trivia(z.read(FIXTURES + "triviaqa-sample.tgz"), docs, questions)
    return docs, questions


def _squad_format(data: Any, tag: str, docs: dict[str, Doc], out: list[Question]) -> None:
    for a, article in enumerate(data["data"]):
        title = article.get("title") or article.get("section_title") or f"{tag} {a}"
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{tag}/{a}/{p}"
            docs[doc_id] = Doc(doc_id, str(title), paragraph["context"])
            for qa in paragraph["qas"]:
                answers = [x["text"] for x in qa.get("answers", []) if x["text"] != "CANNOTANSWER"]
                if answers:
                    out.append(Question(qa["id"], qa["question"], {doc_id}, answers, tag))


def _drop(data: Any, docs: dict[str, Doc], out: list[Question]) -> None:
    for pid, entry in data.items():
        doc_id = f"drop/{pid}"
        docs[doc_id] = Doc(doc_id, pid, entry["passage"])
        for n, qa in enumerate(entry["qa_pairs"]):
            answer = qa["answer"]
            answers = list(answer.get("spans") or [])
            if answer.get("number"):
                answers.append(str(answer["number"]))
            out.append(Question(f"{doc_id}/{n}", qa["question"], {doc_id}, answers, "drop"))


def _trivia(archive: bytes, docs: dict[str, Doc], out: list[Question]) -> None:
    seen: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: m for m in tar.getmembers() if m.isfile()}

        def text(name: str) -> str | None:
            member = files.get(name)
            handle = tar.extractfile(member) if member is not None else None
            return handle.read().decode("utf-8", "replace") if handle is not None else None

        for name in sorted(n for n in files if n.startswith("qa/") and n.endswith(".json")):
            for entry in json.loads(text(name) or "{}").get("Data", []):
                if entry["Question"] in seen:
                    continue
                seen.add(entry["Question"])
                wanted = set()
                for page in entry.get("EntityPages", []):
                    wanted.add(("wikipedia", page["Filename"], page.get("Title", page["Filename"])))
                for page in entry.get("SearchResults", []):
                    wanted.add(("web", page["Filename"], page.get("Title", page["Filename"])))
                ids = set()
                for kind, filename, title in wanted:
                    body = text(f"evidence/{kind}/{filename}")
                    if body:
                        doc_id = f"triviaqa/{kind}/{filename}"
                        docs[doc_id] = Doc(doc_id, str(title), body)
                        ids.add(doc_id)
                answer = entry["Answer"]
                answers = [answer["Value"], *answer.get("Aliases", [])]
                if ids:
                    out.append(
                        Question(entry["QuestionId"], entry["Question"], ids, answers, "triviaqa")
                    )
