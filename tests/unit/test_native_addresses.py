"""The core's address normalisation stops exactly where email-validator and phonenumbers must decide.

For any text, the core either answers itself, and then its answer is the
library's, or hands the text to the Python reference (which is the library).
The reference here is the libraries called directly, not the Python module's
own shortcuts.
"""

from __future__ import annotations

import phonenumbers
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.native_reference import RecordingFallback, make_codec, make_settings
from worker.gate.core import build_core

CODEC = make_codec()
SETTINGS = make_settings()
BASE = {
    "message_id": "m",
    "org_id": "o1",
    "user_id": "u1",
    "contact_id": "c1",
    "category": "MARKETING",
    "requested_at": 1,
    "campaign_id": None,
    "payload": None,
    "attributes": {},
}


def library_email(raw: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    try:
        parsed = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except ValueError:
        return None
    return f"{parsed.local_part.lower()}@{parsed.ascii_domain}"


def library_phone(raw: str, region: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalised_by_core(channel: str, to: str, from_: str, region: str = "US") -> tuple[str | None, str | None, RecordingFallback]:
    fallback = RecordingFallback(codec=CODEC, default_phone_region=region)
    core = build_core(make_settings(region=region), CODEC, fallback=fallback)
    value = CODEC.encode("SendRequest", {**BASE, "channel": channel, "to": to, "from": from_})
    [(_, normalised, sender_domain, _)] = core.prepare([value]).describe()
    return normalised, sender_domain, fallback


LOCAL = st.text(alphabet="abcXYZ019.+-_!#'`~|{}\"()@ \t\x1c", min_size=0, max_size=12)
DOMAIN = st.text(alphabet="abcXYZ019.-é", min_size=0, max_size=14)
TLDS = st.sampled_from(("com", "COM", "de", "x", "c0m", "0c", "test", "local", "a-b", "-ab", "ab-", "xn--p1ai", ""))


@st.composite
def addresses(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=20))
    pad = draw(st.sampled_from(("", " ", "\t", "\n ", "\x1f")))
    return f"{pad}{draw(LOCAL)}@{draw(DOMAIN)}.{draw(TLDS)}{pad}"


@settings(max_examples=3000, deadline=None)
@given(addresses())
def test_an_email_the_core_answers_is_email_validators_answer(raw: str) -> None:
    normalised, _, fallback = normalised_by_core("EMAIL", raw, "officer@acme.com")
    if raw in fallback.emails:
        return  # decided by the library itself
    assert normalised == library_email(raw)


@settings(max_examples=500, deadline=None)
@given(addresses())
def test_the_sender_domain_is_the_normalised_senders(raw: str) -> None:
    _, sender_domain, _fallback = normalised_by_core("EMAIL", "ann@example.com", raw)
    expected = library_email(raw)
    assert sender_domain == (None if expected is None else expected.rpartition("@")[2])


PHONE_TEXT = st.text(alphabet="+1234567890 ()-.x", max_size=16)


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(PHONE_TEXT, st.from_regex(r"\s?\+1\d{9,11}\s?", fullmatch=True), st.text(max_size=12)), st.sampled_from(("US", "GB", "DE"))
)
def test_a_number_the_core_answers_is_phonenumbers_answer(raw: str, region: str) -> None:
    normalised, _, fallback = normalised_by_core("SMS", raw, "55555", region)
    if raw in fallback.phones:
        return
    assert normalised == library_phone(raw, region)


def test_the_boundary_is_where_it_is_documented() -> None:
    """Plain ASCII addresses and NANP E.164 numbers never reach the libraries; the rest always does."""
    assert normalised_by_core("EMAIL", " Ann@Example.COM", "officer@acme.com")[2].emails == []
    assert normalised_by_core("EMAIL", "bob@bücher.de", "officer@acme.com")[2].emails == ["bob@bücher.de"]
    assert normalised_by_core("EMAIL", "x@a.test", "officer@acme.com")[2].emails == ["x@a.test"]
    assert normalised_by_core("SMS", "+12025550101", "55555")[2].phones == []
    assert normalised_by_core("SMS", "(202) 555-0101", "55555")[2].phones == ["(202) 555-0101"]
    assert normalised_by_core("SMS", "+442071234567", "55555")[0] == "+442071234567"
