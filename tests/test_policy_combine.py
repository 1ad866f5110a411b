"""How verdicts combine (a pure function): properties over any mix of verdicts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mainspring.guard.policy.combine import combine, rewritten
from mainspring.guard.policy.verdict import Verdict

verdicts = st.lists(
    st.builds(
        Verdict,
        st.sampled_from(["allow", "deny", "approve", "rewrite"]),
        st.text(max_size=5),
        st.none(),
        st.just(("ssn",)),
        st.sampled_from(["r1", "r2", "r3"]),
        st.booleans(),
    ),
    max_size=8,
)


@given(verdicts, st.booleans(), st.sampled_from(["allow", "deny"]))
def test_deny_wins_and_dangerous_tools_need_a_rule_that_names_them(
    vs: list[Verdict], dangerous: bool, default: str
) -> None:
    final = combine(vs, dangerous=dangerous, default=default, tool="t")
    outcomes = {v.outcome for v in vs}
    if "deny" in outcomes:
        assert final == next(v for v in vs if v.outcome == "deny")
    elif dangerous and not any(v.explicit for v in vs):
        assert final.outcome == "deny" and final.rule == "dangerous-tools"
    elif "approve" in outcomes:
        assert final.outcome == "approve"
    elif "rewrite" in outcomes:
        assert final.outcome == "rewrite"
    elif "allow" in outcomes:
        assert final.outcome == "allow"
    else:
        assert final.outcome == default and final.rule == "default"


@given(st.dictionaries(st.sampled_from(["ssn", "q", "card"]), st.text(max_size=4)))
def test_redaction_masks_only_the_paths_named(args: dict[str, str]) -> None:
    out = rewritten(args, [Verdict("rewrite", redact=("ssn", "card.number"))])
    assert out.keys() == args.keys()
    for key, value in args.items():
        assert out[key] == ("[redacted]" if key == "ssn" else value)
    nested = rewritten(
        {"card": {"number": "4242", "exp": "12/30"}}, [Verdict("rewrite", redact=("card.number",))]
    )
    assert nested == {"card": {"number": "[redacted]", "exp": "12/30"}}
