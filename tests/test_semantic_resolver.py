"""The default resolver favours precision: a fact is never dropped or hidden for a
neighbour about another entity, whatever the cosine (labelled pairs in
tests/data/fact_pairs.json; the measurement is benchmarks/semantic_resolver_eval.py)."""

from __future__ import annotations

import pytest

from mainspring.memory.semantic.memory import DEFAULT_DEDUPE, DEFAULT_SUPERSEDE
from mainspring.memory.semantic.resolver import SimilarityResolver

RULE = SimilarityResolver(DEFAULT_DEDUPE, DEFAULT_SUPERSEDE)

# Different entities in the same template: both facts must be kept, even at cosine 0.99.
DISTINCT = [
    ("Order 1234 shipped on Monday.", "Order 5678 shipped on Tuesday."),
    ("Order 1234 has shipped.", "Order 5678 has shipped."),
    ("Deploys to staging need approval.", "Deploys to production need approval."),
    ("The user's password must be rotated monthly.", "The user's API key must be rotated monthly."),
    ("My flight to Tokyo is on May 3.", "My flight to Osaka is on May 9."),
    ("My flight to Tokyo is on May 3.", "My flight to Osaka is on May 3."),
    ("The user is allergic to peanuts.", "The user is allergic to shellfish."),
    ("Emma is allergic to peanuts.", "Liam is allergic to peanuts."),
    ("Server web-01 is in rack 4.", "Server web-02 is in rack 4."),
    ("Customer 9921 prefers email contact.", "Customer 9922 prefers email contact."),
    ("The staging database is backed up nightly.", "The production database is backed up nightly."),
    ("The user's mother lives in Lyon.", "The user's father lives in Lyon."),
    ("The user speaks French.", "The user speaks Spanish."),
    ("Ticket 77 is blocked by ticket 12.", "Ticket 78 is blocked by ticket 12."),
    ("The user lives in Paris.", "The user's sister lives in Paris."),
    ("Room 101 is booked for the offsite.", "Room 102 is booked for the offsite."),
]

# The same subject clearly gets a new value.
SUPERSEDES = [
    ("My favourite colour is blue.", "My favourite colour is green."),
    ("I live in Paris.", "I now live in Berlin."),
    ("The meeting is at 3pm.", "The meeting moved to 4pm."),
    ("My flight to Tokyo is on May 3.", "My flight to Tokyo is on May 9."),
    ("The user likes jazz.", "The user does not like jazz."),
    ("The user has two children.", "The user has three children."),
    (
        "The API rate limit is 100 requests per minute.",
        "The API rate limit is 500 requests per minute.",
    ),
]

DUPLICATES = [
    ("Order 1234 shipped on Monday.", "Order 1234 was shipped on Monday."),
    ("The meeting is at 3pm.", "The meeting is at 3 pm."),
    ("My favourite colour is blue.", "Blue is my favorite color."),
    ("The project deadline is Friday.", "The deadline for the project is on Friday."),
]


@pytest.mark.parametrize(("old", "new"), DISTINCT)
@pytest.mark.parametrize("cosine", [0.99, 0.8, 0.6])
def test_other_entities_stay_distinct(old: str, new: str, cosine: float) -> None:
    assert RULE.decide(old, new, cosine) == "distinct"
    assert RULE.decide(new, old, cosine) == "distinct"


@pytest.mark.parametrize(("old", "new"), SUPERSEDES)
def test_a_new_value_of_the_same_subject_supersedes(old: str, new: str) -> None:
    assert RULE.decide(old, new, 0.8) == "supersedes"


@pytest.mark.parametrize(("old", "new"), SUPERSEDES)
def test_a_new_value_is_never_a_duplicate(old: str, new: str) -> None:
    assert RULE.decide(old, new, 0.99) != "duplicate"


@pytest.mark.parametrize(("old", "new"), DUPLICATES)
def test_paraphrases_are_duplicates(old: str, new: str) -> None:
    assert RULE.decide(old, new, 0.95) == "duplicate"


def test_low_cosine_is_distinct_whatever_the_shape() -> None:
    assert RULE.decide("I live in Paris.", "I live in Berlin.", 0.2) == "distinct"


def test_contradiction_handling_off_only_dedupes() -> None:
    rule = SimilarityResolver(DEFAULT_DEDUPE, None)
    assert rule.decide("My favourite colour is blue.", "My favourite colour is green.", 0.95) == (
        "distinct"
    )
    assert rule.decide("The meeting is at 3pm.", "The meeting is at 3 pm.", 0.95) == "duplicate"
