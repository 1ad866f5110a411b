"""The SecretProvider conformance suite, run against every provider on real sources (the
process environment, files on disk), and what is particular to each format."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mainspring.guard.secrets import (
    CachedSecrets,
    ChainSecrets,
    EnvSecrets,
    FileSecrets,
    SecretProvider,
    SecretsError,
    parse_dotenv,
)

# -- backends ----------------------------------------------------------------------------


def _replace(path: Path, text: str) -> None:
    """Write as a secret manager does: a new file renamed over the old one (atomic)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class Backend:
    provider: SecretProvider
    set: Callable[[str, str], None]
    remove: Callable[[str], None]
    settle: float = 0.0  # how long a change may take to be seen (a cache's ttl)


def _env(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Backend:
    prefix = f"MSTEST_{uuid.uuid4().hex[:6].upper()}_"
    return Backend(
        EnvSecrets(prefix=prefix),
        lambda n, v: monkeypatch.setenv(prefix + n, v),
        lambda n: monkeypatch.delenv(prefix + n, raising=False),
    )


def _dir(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Backend:
    return Backend(
        FileSecrets(tmp / "secrets"),
        lambda n, v: _replace(tmp / "secrets" / n, v + "\n"),
        lambda n: (tmp / "secrets" / n).unlink(missing_ok=True),
    )


def _kubernetes(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Backend:
    """Kubernetes' layout: NAME -> ..data/NAME, ..data -> a timestamped directory swapped
    by renaming a new symlink over it."""
    root = tmp / "secrets"
    held: dict[str, str] = {}

    def publish() -> None:
        version = root / f"..{uuid.uuid4().hex}"
        version.mkdir()
        for name, value in held.items():
            (version / name).write_text(value)
            if not (root / name).is_symlink():
                (root / name).symlink_to(Path("..data") / name)
        link = root / f"..data_tmp{uuid.uuid4().hex}"
        link.symlink_to(version.name)
        os.replace(link, root / "..data")

    def set_(name: str, value: str) -> None:
        held[name] = value
        publish()

    def remove(name: str) -> None:
        held.pop(name, None)
        (root / name).unlink(missing_ok=True)
        publish()

    return Backend(FileSecrets(root), set_, remove)


def _json(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Backend:
    path = tmp / "secrets.json"
    held: dict[str, str] = {}
    _replace(path, "{}")

    def set_(name: str, value: str) -> None:
        held[name] = value
        _replace(path, json.dumps(held))

    def remove(name: str) -> None:
        held.pop(name, None)
        _replace(path, json.dumps(held))

    return Backend(FileSecrets(path), set_, remove)


def _dotenv(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Backend:
    path = tmp / "app.env"
    held: dict[str, str] = {}
    _replace(path, "")

    def set_(name: str, value: str) -> None:
        held[name] = value
        _replace(path, "".join(f"{n}='{v}'\n" for n, v in held.items()))

    def remove(name: str) -> None:
        held.pop(name, None)
        _replace(path, "".join(f"{n}='{v}'\n" for n, v in held.items()))

    return Backend(FileSecrets(path), set_, remove)


def _chain(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Backend:
    first = _dir(monkeypatch, tmp)  # empty: every name falls through to the environment
    second = _env(monkeypatch, tmp)
    return Backend(ChainSecrets(first.provider, second.provider), second.set, second.remove)


def _cached(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Backend:
    source = _dir(monkeypatch, tmp)
    provider = CachedSecrets(source.provider.get, ttl=0.2, name="files")
    return Backend(provider, source.set, source.remove, settle=0.25)


BACKENDS = {
    "env": _env,
    "dir": _dir,
    "kubernetes": _kubernetes,
    "json": _json,
    "dotenv": _dotenv,
    "chain": _chain,
    "cached": _cached,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Backend]:
    (tmp_path / "secrets").mkdir()
    yield BACKENDS[request.param](monkeypatch, tmp_path)


def _settled(backend: Backend) -> None:
    if backend.settle:
        time.sleep(backend.settle)


# -- the conformance suite ---------------------------------------------------------------


def test_is_a_secret_provider_and_a_function_of_a_name(backend: Backend) -> None:
    backend.set("API_KEY", "v-1-abcdef")
    _settled(backend)
    assert isinstance(backend.provider, SecretProvider)
    assert backend.provider.get("API_KEY") == backend.provider("API_KEY") == "v-1-abcdef"


def test_a_name_it_does_not_hold_is_none(backend: Backend) -> None:
    backend.set("API_KEY", "v-1-abcdef")
    _settled(backend)
    assert backend.provider.get("OTHER_KEY") is None


@pytest.mark.parametrize("bad", ["", "a b", "x" * 300, "tab\there", "semi;colon"])
def test_a_name_no_source_could_hold_is_a_value_error(backend: Backend, bad: str) -> None:
    with pytest.raises(ValueError, match="secret name"):
        backend.provider.get(bad)


def test_a_name_never_reaches_outside_the_source(backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("not-a-secret-of-this-provider")
    for name in ("../outside", "/etc/passwd", "..data", ".hidden"):
        assert backend.provider.get(name) in (None,)


def test_rotation_is_seen_without_a_restart(backend: Backend) -> None:
    backend.set("API_KEY", "old-value-1")
    _settled(backend)
    assert backend.provider.get("API_KEY") == "old-value-1"
    backend.set("API_KEY", "new-value-2")
    _settled(backend)
    assert backend.provider.get("API_KEY") == "new-value-2"


def test_a_removed_secret_is_gone(backend: Backend) -> None:
    backend.set("API_KEY", "v-1-abcdef")
    backend.set("KEEP", "kept-value")
    _settled(backend)
    assert backend.provider.get("API_KEY") == "v-1-abcdef"
    backend.remove("API_KEY")
    _settled(backend)
    assert backend.provider.get("API_KEY") is None and backend.provider.get("KEEP") == "kept-value"


def test_an_empty_value_is_no_secret(backend: Backend) -> None:
    backend.set("EMPTY", "")
    _settled(backend)
    assert backend.provider.get("EMPTY") is None


def test_its_repr_shows_no_value(backend: Backend) -> None:
    backend.set("API_KEY", "v-hidden-in-repr")
    _settled(backend)
    backend.provider.get("API_KEY")
    assert "v-hidden-in-repr" not in repr(backend.provider)


def test_readers_during_a_rotation_see_the_old_or_the_new_value_never_a_torn_one(
    backend: Backend,
) -> None:
    backend.set("API_KEY", "value-0")
    _settled(backend)
    seen: set[str | None] = set()
    stop = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                seen.add(backend.provider.get("API_KEY"))
        except BaseException as exc:  # reported below
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(1, 30):
        backend.set("API_KEY", f"value-{i}")
    time.sleep(backend.settle + 0.05)
    stop.set()
    for t in readers:
        t.join()
    assert not failures
    assert seen <= {f"value-{i}" for i in range(30)}
    assert backend.provider.get("API_KEY") == "value-29"


# -- per provider ------------------------------------------------------------------------


def test_env_prefix_mapping_and_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_STRIPE_KEY", "sk-mapped")
    monkeypatch.setenv("APP_OTHER", "other-value")
    monkeypatch.setenv("OTHER", "bare-value")
    mapped = EnvSecrets({"PAYMENTS": "STRIPE_KEY"}, prefix="APP_")
    assert mapped.get("PAYMENTS") == "sk-mapped" and mapped.get("OTHER") == "other-value"
    only = EnvSecrets({"PAYMENTS": "STRIPE_KEY"}, prefix="APP_", only=True)
    assert only.get("OTHER") is None and only.variable("PAYMENTS") == "APP_STRIPE_KEY"
    assert EnvSecrets().get("OTHER") == "bare-value"
    with pytest.raises(ValueError, match="not a variable name"):
        EnvSecrets({"A": "B=C"})


def test_a_directory_drops_one_trailing_newline_and_skips_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "TOKEN").write_text("line-one\n")
    (tmp_path / "TWO").write_text("two-lines\n\n")
    (tmp_path / ".hidden").write_text("nope")
    provider = FileSecrets(tmp_path)
    assert provider.format == "dir"
    assert provider.get("TOKEN") == "line-one" and provider.get("TWO") == "two-lines\n"
    assert provider.get(".hidden") is None


def test_check_every_spaces_out_the_stat_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "TOKEN").write_text("first-value")
    provider = FileSecrets(tmp_path, check_every=0.3)
    assert provider.get("TOKEN") == "first-value"
    _replace(tmp_path / "TOKEN", "second-value")
    assert provider.get("TOKEN") == "first-value"  # within check_every: not looked at
    time.sleep(0.35)
    assert provider.get("TOKEN") == "second-value"


def test_dotenv_syntax() -> None:
    text = """
# a comment
export PLAIN=plain-value
SPACED = spaced value   # trailing comment
SINGLE='raw \\n kept # not a comment'
DOUBLE="line\\nnext \\"quoted\\""
EMPTY=
"""
    assert parse_dotenv(text) == {
        "PLAIN": "plain-value",
        "SPACED": "spaced value",
        "SINGLE": "raw \\n kept # not a comment",
        "DOUBLE": 'line\nnext "quoted"',
        "EMPTY": "",
    }
    with pytest.raises(SecretsError, match="line 1 is not NAME=value"):
        parse_dotenv("no equals sign here")
    with pytest.raises(SecretsError, match="never closed"):
        parse_dotenv("A='open")


def test_a_bad_json_file_is_a_clear_error_that_quotes_no_value(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"A": "secret-a", "B": 12345678}')
    with pytest.raises(SecretsError, match="'B' are not strings") as caught:
        FileSecrets(path).get("A")
    assert "secret-a" not in str(caught.value) and "12345678" not in str(caught.value)
    path.write_text('{"A": "secret-a", oops}')
    with pytest.raises(SecretsError, match="is not JSON") as caught:
        FileSecrets(path).get("A")
    assert "secret-a" not in str(caught.value)
    with pytest.raises(ValueError, match="pass format="):
        FileSecrets(tmp_path / "secrets.yaml")


def test_chain_takes_the_first_source_that_holds_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = ChainSecrets({"A": "from-mapping"}, lambda n: "from-function" if n != "C" else None)
    assert chain.get("A") == "from-mapping" and chain.get("B") == "from-function"
    assert chain.get("C") is None
    with pytest.raises(TypeError, match="neither a provider"):
        ChainSecrets(42)  # type: ignore[arg-type]


def test_cached_fetches_once_per_ttl_and_rides_out_an_outage() -> None:
    calls: list[str] = []
    state: dict[str, Any] = {"value": "v1-remote", "down": False}

    def fetch(name: str) -> str | None:
        calls.append(name)
        if state["down"]:
            raise ConnectionError(f"vault unreachable while reading {state['value']}")
        return state["value"] if name == "K" else None

    provider = CachedSecrets(fetch, ttl=0.2, stale_for=0.4)
    assert [provider.get("K") for _ in range(5)] == ["v1-remote"] * 5 and calls == ["K"]
    assert provider.get("MISSING") is None and provider.get("MISSING") is None
    assert calls == ["K", "MISSING"]  # an absence is kept too
    state["value"] = "v2-remote"
    provider.invalidate("K")
    assert provider.get("K") == "v2-remote"  # a rotation hook needs no wait
    state["down"] = True
    time.sleep(0.25)
    assert provider.get("K") == "v2-remote"  # stale but recent: used, the outage logged
    time.sleep(0.45)
    with pytest.raises(SecretsError, match="ConnectionError") as caught:
        provider.get("K")
    assert "v2-remote" not in str(caught.value) and caught.value.__cause__ is None


@pytest.mark.anyio
async def test_cached_prefetch_fetches_in_a_worker_thread() -> None:
    threads: list[int] = []

    def fetch(name: str) -> str:
        threads.append(threading.get_ident())
        return f"value-of-{name}"

    provider = CachedSecrets(fetch, ttl=60)
    await provider.prefetch(["A", "B"])
    assert threads and threading.get_ident() not in threads
    assert provider.get("A") == "value-of-A" and len(threads) == 2
