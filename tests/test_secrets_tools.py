"""Secrets as tools get them: each tool only its own, rotation seen by the next call of a
running runtime, and the scrubbing itself (texts, data, errors, logs)."""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mainspring import END, START, Context, Graph, Runtime
from mainspring.guard.secrets import (
    HANDED,
    EnvSecrets,
    FileSecrets,
    HandedValues,
    Scrubber,
    SecretArgs,
    SecretFilter,
)
from mainspring.telemetry.logs import JsonFormatter
from mainspring.tools import MissingSecretError, Toolbox, ToolContext, ToolFailedError, tool
from mainspring.tools.errors import NeedsHuman

pytestmark = pytest.mark.anyio


class S(TypedDict, total=False):
    tool: str
    seen: Any


def _graph() -> Any:
    async def call(s: S, ctx: Context) -> S:
        return {"seen": await ctx.tool(s["tool"])}

    g = Graph(S)
    g.node("call", call)
    g.edge(START, "call")
    g.edge("call", END)
    return g.compile(name="call")


@tool(secrets=["STRIPE_KEY"])
def payments(ctx: ToolContext) -> dict[str, Any]:
    """Sees which secrets it was given."""
    other = None
    try:
        other = ctx.secret("GITHUB_TOKEN")
    except MissingSecretError as exc:
        other = str(exc)
    return {"names": sorted(ctx.secrets), "own": len(ctx.secret("STRIPE_KEY")), "other": other}


@tool(secrets=["GITHUB_TOKEN"])
def github(ctx: ToolContext) -> dict[str, Any]:
    """Sees which secrets it was given."""
    return {"names": sorted(ctx.secrets), "stripe": ctx.secrets.get("STRIPE_KEY")}


@tool
def plain(ctx: ToolContext) -> dict[str, Any]:
    """Declares nothing."""
    return {"names": sorted(ctx.secrets)}


async def test_each_tool_gets_only_the_secrets_it_declared(tmp_path: Path) -> None:
    source = {"STRIPE_KEY": "sk_live_" + "a" * 24, "GITHUB_TOKEN": "ghp_" + "b" * 36}
    box = Toolbox([payments, github, plain], secrets=source)
    async with Runtime.open(f"sqlite:///{tmp_path / 's.db'}", tools=box) as rt:
        pay = (await rt.run(_graph(), {"tool": "payments"}))["seen"]
        gh = (await rt.run(_graph(), {"tool": "github"}))["seen"]
        none = (await rt.run(_graph(), {"tool": "plain"}))["seen"]
    assert pay["names"] == ["STRIPE_KEY"] and pay["own"] == 32
    assert "has no secret 'GITHUB_TOKEN': declare it" in pay["other"]
    assert gh == {"names": ["GITHUB_TOKEN"], "stripe": None}
    assert none == {"names": []}


async def test_a_rotated_file_or_env_secret_is_used_by_the_next_call_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @tool(secrets=["FILE_KEY", "ENV_KEY"])
    def show(ctx: ToolContext) -> list[int]:
        """Returns which version of each key it got (never the key)."""
        return [int(ctx.secret("FILE_KEY").rsplit("-", 1)[1]),
                int(ctx.secret("ENV_KEY").rsplit("-", 1)[1])]  # fmt: skip

    from mainspring.guard.secrets import ChainSecrets

    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "FILE_KEY").write_text("file-key-version-1\n")
    monkeypatch.setenv("ROT_ENV_KEY", "env-key-version-1")
    provider = ChainSecrets(FileSecrets(tmp_path / "secrets"), EnvSecrets(prefix="ROT_"))
    async with Runtime.open(
        f"sqlite:///{tmp_path / 'r.db'}", tools=Toolbox([show], secrets=provider)
    ) as rt:
        first = (await rt.run(_graph(), {"tool": "show"}))["seen"]
        tmp = tmp_path / "secrets" / ".FILE_KEY.new"
        tmp.write_text("file-key-version-2\n")
        os.replace(tmp, tmp_path / "secrets" / "FILE_KEY")
        monkeypatch.setenv("ROT_ENV_KEY", "env-key-version-2")
        second = (await rt.run(_graph(), {"tool": "show"}))["seen"]
    assert first == [1, 1] and second == [2, 2]


def test_a_toolbox_without_secrets_adds_no_hook_and_a_late_secret_tool_is_refused() -> None:
    box = Toolbox([plain])
    assert not any(isinstance(h, SecretArgs) for h in box.gate_hooks)
    with pytest.raises(ValueError, match="declares secrets, but this toolbox's gate hooks"):
        box.add(payments)
    with_secrets = Toolbox([plain, payments], secrets={})
    assert any(isinstance(h, SecretArgs) for h in with_secrets.gate_hooks)


async def test_a_failing_tools_error_keeps_its_type_loses_its_chain_and_its_secret() -> None:
    key = f"tok-{uuid.uuid4().hex}"

    @tool(secrets=["K"])
    def needs_person(ctx: ToolContext) -> str:
        """Its fallback is a person; the arguments it shows hold the key."""
        raise NeedsHuman.of("needs_person", {"key": ctx.secret("K")}, "over the limit")

    @tool(secrets=["K"])
    def clean_failure(ctx: ToolContext) -> str:
        """Fails without quoting the key."""
        raise ConnectionError("upstream down")

    box = Toolbox([needs_person, clean_failure], secrets={"K": key})
    with pytest.raises(NeedsHuman) as caught:
        await box.call("needs_person", {})
    assert caught.value.args_given == {"key": "[secret:K]"} and key not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert caught.value.__traceback__ is not None  # where it failed is kept
    with pytest.raises(ToolFailedError) as plain_error:
        await box.call("clean_failure", {})
    assert isinstance(plain_error.value.__cause__, ConnectionError)  # nothing to hide: untouched


def test_the_scrubber_replaces_the_longest_first_encoded_forms_and_short_values_whole() -> None:
    scrub = Scrubber({"LONG": "abcd-efgh-ijkl", "PART": "abcd-efgh", "PIN": "123", "Q": 'a"b/c d'})
    assert scrub.text("x abcd-efgh-ijkl y abcd-efgh") == "x [secret:LONG] y [secret:PART]"
    assert scrub.text("123") == "[secret:PIN]" and scrub.text("order 1234") == "order 1234"
    assert scrub.text('json "a\\"b/c d" url a%22b%2Fc%20d') == 'json "[secret:Q]" url [secret:Q]'
    data = {"k": ["abcd-efgh", {"abcd-efgh-ijkl": 1}], "n": 5, "t": ("123",)}
    assert scrub.value(data) == {
        "k": ["[secret:PART]", {"[secret:LONG]": 1}],
        "n": 5,
        "t": ["[secret:PIN]"],
    }
    many = Scrubber({f"N{i}": f"value-number-{i:03d}" for i in range(40)})  # one regex
    assert many.text("value-number-007 and value-number-039") == "[secret:N7] and [secret:N39]"


def test_the_log_filter_scrubs_message_arguments_exceptions_and_extras() -> None:
    values = HandedValues()
    values.add({"TOKEN": "s3cr3t-value-42"})
    logger = logging.getLogger(f"t.{uuid.uuid4().hex}")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretFilter(values))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("using %s", "s3cr3t-value-42", extra={"header": "Bearer s3cr3t-value-42"})
        try:
            raise RuntimeError("refused s3cr3t-value-42")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "s3cr3t-value-42" not in text
    assert text.count("[secret:TOKEN]") >= 3 and "RuntimeError: refused [secret:TOKEN]" in text


def test_handed_values_are_bounded_and_rebuilt_only_when_new() -> None:
    values = HandedValues(limit=3)
    values.add({"A": "value-a-1"})
    first = values.scrubber
    values.add({"A": "value-a-1"})
    assert values.scrubber is first  # nothing new: not rebuilt
    for i in range(5):
        values.add({f"N{i}": f"value-n-{i}"})
    assert (
        values.scrubber.text("value-a-1 value-n-4") == "value-a-1 [secret:N4]"
    )  # the oldest dropped
    HANDED.clear()


@given(
    st.text(min_size=4, max_size=40).filter(lambda v: v.strip() == v and "\x00" not in v),
    st.text(max_size=30),
    st.text(max_size=30),
)
@settings(max_examples=300)
def test_no_form_of_a_value_survives_scrubbing(value: str, before: str, after: str) -> None:
    scrub = Scrubber({"K": value})
    for shown in (value, json.dumps(value)[1:-1], quote(value, safe="")):
        out = scrub.text(before + shown + after).replace("[secret:K]", "\x00")
        assert value not in out and shown not in out
        data = scrub.value({"a": [before + shown], value: after})
        strings = [*data, *data["a"], *data.values()]
        assert not any(
            value in t.replace("[secret:K]", "\x00") for t in strings if isinstance(t, str)
        )
