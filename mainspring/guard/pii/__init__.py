"""Personal data and credentials kept out of what is recorded and exported.

:class:`Redactor` is a gate hook (``Runtime(gates=[Redactor(...)])``: recorded arguments,
results before anyone sees them, error messages) and a ``record -> record`` function
for exports; :class:`Rule` configures it per field and per effect. See
docs/data-protection.md.
"""

from .detect import KINDS, card_issuer_known, is_card, is_phone, luhn, redact_text
from .redactor import Redactor
from .rules import MASKED, Rule

__all__ = [
    "KINDS",
    "MASKED",
    "Redactor",
    "Rule",
    "card_issuer_known",
    "is_card",
    "is_phone",
    "luhn",
    "redact_text",
]
