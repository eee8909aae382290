"""SPEC §1 normalisation of email addresses, phone numbers and sender domains."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.policy.addresses import (
    _plain_email,
    _validated_email,
    email_domain,
    normalize_domain,
    normalize_email,
    normalize_phone,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane@example.com", "jane@example.com"),
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("  jane@example.com\t\n", "jane@example.com"),
        ("JANE+News@example.com", "jane+news@example.com"),  # plus-tag kept
        ("jane@bücher.de", "jane@xn--bcher-kva.de"),  # IDNA
        ("jane@BÜCHER.de", "jane@xn--bcher-kva.de"),
        ("jane@xn--bcher-kva.de", "jane@xn--bcher-kva.de"),  # already punycode
        ("Ünï@bücher.de", "ünï@xn--bcher-kva.de"),  # SMTPUTF8 local part, lower-cased
        ("o'brien@sub.example.co.uk", "o'brien@sub.example.co.uk"),
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


def test_plus_tags_are_distinct_addresses() -> None:
    assert normalize_email("a+x@d.com") != normalize_email("a@d.com")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "jane",
        "jane@",
        "@example.com",
        "jane@@example.com",
        "jane doe@example.com",
        "jane@localhost",  # no dot in the domain
        "jane@-bad.com",
        "jane@example.com.",
        '"quoted"@example.com',
        "jane@[192.0.2.1]",
        "Jane <jane@example.com>",  # display names are not addresses
        "a@" + ".".join(["b" * 63] * 4) + ".com",  # domain too long
    ],
)
def test_invalid_email(raw: str) -> None:
    assert normalize_email(raw) is None


def test_non_string_email_is_invalid() -> None:
    assert normalize_email(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 202 555 0101", "US", "+12025550101"),
        ("(202) 555-0101", "US", "+12025550101"),
        ("202.555.0101", "US", "+12025550101"),
        ("2025550101", "US", "+12025550101"),
        ("1-202-555-0101", "US", "+12025550101"),
        ("  +12025550101  ", "US", "+12025550101"),
        ("+44 20 7946 0958", "US", "+442079460958"),  # an explicit country code wins
        (
            "020 7946 0958",
            "GB",
            "+442079460958",
        ),  # national number in the default region
        (
            "+1 555 555 0100",
            "US",
            "+15555550100",
        ),  # possible though not assigned: accepted
        ("1-800-FLOWERS", "US", "+18003569377"),
    ],
)
def test_normalize_phone(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


def test_default_region_is_us() -> None:
    assert normalize_phone("(202) 555-0101") == "+12025550101"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "  ",
        "not a number",
        "555-0101",  # local-only: no E.164 form
        "+1 202 555 01011",  # too long
        "12",
        "+999 1234567",  # no such country code
    ],
)
def test_invalid_phone(raw: str) -> None:
    assert normalize_phone(raw) is None


def test_unknown_region_only_reads_international_numbers() -> None:
    assert normalize_phone("2025550101", "ZZ") is None
    assert normalize_phone("+12025550101", "ZZ") == "+12025550101"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("acme.com", "acme.com"),
        (" ACME.com ", "acme.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ],
)
def test_normalize_domain(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", " ", "acme", "user@acme.com", "-acme.com", "acme..com"]
)
def test_invalid_domain(raw: str) -> None:
    assert normalize_domain(raw) is None


@pytest.mark.parametrize("sender", ["officer@Bücher.de", "OFFICER@xn--bcher-kva.de"])
def test_event_domain_matches_request_sender_domain(sender: str) -> None:
    normalized = normalize_email(sender)
    assert normalized is not None
    assert email_domain(normalized) == normalize_domain("BÜCHER.DE")


def test_email_domain() -> None:
    assert email_domain("a+b@sub.example.com") == "sub.example.com"


# -- the fast path for plain addresses agrees with email_validator -------------

_ALPHABET = "ab0.-@+_'XNxn" + "é"


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=_ALPHABET, max_size=24),
        st.builds(
            "{}@{}.{}".format,
            st.text(alphabet="aZ9.-+_'", min_size=1, max_size=8),
            st.text(alphabet="aZ9.-", min_size=1, max_size=12),
            st.sampled_from(
                [
                    "com",
                    "io",
                    "c0m",
                    "co1",
                    "x-y",
                    "test",
                    "local",
                    "xn--p1ai",
                    "a",
                    "7z",
                ]
            ),
        ),
    )
)
def test_fast_path_agrees_with_the_validator(text: str) -> None:
    fast = _plain_email(text)
    if fast is not None:
        assert fast == _validated_email(text)


@pytest.mark.parametrize(
    "text",
    [
        "a@b.com1",  # TLD must end with a letter
        "a@ab--cd.com",  # R-LDH label
        "a@xn--bcher-kva.de",  # Punycode: needs the IDNA round trip
        "a@x.test",
        "a@x.localhost",
        "a..b@x.com",
        ".a@x.com",
        "a.@x.com",
        "a@-x.com",
        "a@x-.com",
        "a@" + "b" * 64 + ".com",
        "a" * 250 + "@x.com",
        "é@x.com",
    ],
)
def test_fast_path_leaves_edge_cases_to_the_validator(text: str) -> None:
    assert _plain_email(text) is None


def test_fast_path_takes_the_common_address() -> None:
    assert _plain_email("Jane.Doe+News@Example.COM") == "jane.doe+news@example.com"


@pytest.mark.parametrize(
    "text", ["a!#$%&'*+/=?^_`{|}~-b@x.com", "x@a-b.c-d.museum", "1@2.a1b"]
)
def test_fast_path_accepts_what_the_validator_accepts(text: str) -> None:
    assert _plain_email(text) is not None
    assert _plain_email(text) == _validated_email(text)


@given(st.text(alphabet="0123456789", min_size=10, max_size=10), st.sampled_from(["US", "CA", "GB", "DE"]))
def test_the_north_american_fast_path_agrees_with_phonenumbers(digits, region):
    import phonenumbers

    text = "+1" + digits
    number = phonenumbers.parse(text, region)
    assert phonenumbers.is_possible_number_with_reason(number) == phonenumbers.ValidationResult.IS_POSSIBLE
    assert normalize_phone(text, region) == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
