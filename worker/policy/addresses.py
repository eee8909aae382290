"""Address normalisation (SPEC §1): the forms every fact and decision compares.

Both the gate (per request) and the preference applier (per event) go through
these functions, so an address is keyed identically whichever side saw it. They
sit on the hot path and the same addresses recur, hence the caches.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from email_validator import validate_email

_CACHE_SIZE = 100_000

# The local-only form ("555-0123" in US) is "possible" for phonenumbers but
# has no E.164 form that reaches one subscriber, so it is not accepted.
_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE

# A North American number already in E.164 (the common form from producers):
# every "+1" followed by ten digits is a possible NANP number and is its own
# E.164 form, so phonenumbers (tens of microseconds a miss) is not needed.
_NANP_E164 = re.compile(r"\+1\d{10}")


# The common address, plain lower-case ASCII, checked without email_validator
# (which costs tens of microseconds for an address not seen before). The
# pattern accepts only what email_validator accepts and normalises to itself;
# everything else takes the full validator. Excluded on purpose: Punycode and
# any "--" (IDNA rules), special-use TLDs, TLDs not ending in a letter.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z0-9][a-z0-9-]{0,61})?[a-z]"
)
_SPECIAL_USE_TLDS = frozenset(
    {"arpa", "invalid", "local", "localhost", "onion", "test"}
)


def _plain_email(text: str) -> str | None:
    """``text`` lower-cased if it is a plain ASCII address the fast path can vouch for, else None."""
    if not text.isascii() or len(text) > 254:
        return None
    lowered = text.lower()
    if _PLAIN_EMAIL.fullmatch(lowered) is None or "--" in lowered.rpartition("@")[2]:
        return None
    if lowered.rpartition(".")[2] in _SPECIAL_USE_TLDS:
        return None
    return lowered


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_email(raw: str) -> str | None:
    """``raw`` trimmed, lower-cased, with an IDNA (punycode) domain; None if unparsable.

    Plus-tags are kept: ``a+x@d`` and ``a@d`` are different addresses. Quoted
    local parts, domain literals and display names are not accepted.
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text:
        return None
    plain = _plain_email(text)
    if plain is not None:
        return plain
    return _validated_email(text)


def _validated_email(text: str) -> str | None:
    try:
        parsed = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except ValueError:  # EmailNotValidError, and UnicodeError on odd input
        return None
    return f"{parsed.local_part.lower()}@{parsed.ascii_domain}"


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_phone(raw: str, default_region: str = "US") -> str | None:
    """``raw`` as E.164, reading national numbers in ``default_region``; None if unparsable.

    A number is accepted when its length is possible for its country
    (``phonenumbers`` "possible", not "valid"): validity depends on numbering
    plan metadata that changes between library releases, and a number the gate
    and the applier disagree on over time would lose its opt-out.
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text:
        return None
    if _NANP_E164.fullmatch(text):
        return text
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != _POSSIBLE:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_domain(raw: str) -> str | None:
    """A sender domain as events give it: trimmed, lower-cased, IDNA; None if unparsable.

    Parsed by the same validator as addresses so that ``normalize_domain(d)``
    equals ``email_domain(normalize_email(x + "@" + d))``.
    """
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text or "@" in text:
        return None
    normalized = normalize_email(f"postmaster@{text}")
    return None if normalized is None else email_domain(normalized)


def email_domain(normalized_email: str) -> str:
    """The domain part of an address returned by :func:`normalize_email`."""
    return normalized_email.rpartition("@")[2]
