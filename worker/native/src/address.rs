//! Address normalisation (SPEC §1) for the common shapes only.
//!
//! email-validator and phonenumbers are the authority. This module answers
//! only where it is certain to agree with them: a plain lower-cased ASCII
//! address (the shape `worker/policy/addresses.py` documents as normalising
//! to itself) and a North American number already in E.164. Anything else is
//! `Unsure`, and the Python library decides that record.

/// What the core can say about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalised {
    Valid(String),
    Invalid,
    /// Only the Python library can answer.
    Unsure,
}

const MAX_EMAIL_LENGTH: usize = 254;
const MAX_LABEL_LENGTH: usize = 63;
// Special-use names email-validator refuses (RFC 6761 and friends).
const SPECIAL_USE_TLDS: [&str; 6] = ["arpa", "invalid", "local", "localhost", "onion", "test"];

/// `str.strip()` for ASCII text: Python also strips the four separators 0x1C-0x1F.
fn strip_ascii(text: &str) -> &str {
    text.trim_matches(|c: char| matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\x1c'..='\x1f' | ' '))
}

fn is_atom_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+/=?^_`{|}~-".contains(&b)
}

fn is_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LENGTH
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// The last label: a letter at the end (so never all digits), at most 63 characters.
fn is_top_level(label: &str) -> bool {
    let bytes = label.as_bytes();
    match bytes.last() {
        Some(last) if last.is_ascii_alphabetic() => {}
        _ => return false,
    }
    bytes.len() <= MAX_LABEL_LENGTH
        && (bytes.len() == 1 || bytes[0].is_ascii_alphanumeric())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !SPECIAL_USE_TLDS.contains(&label)
}

/// `normalize_email`: trimmed and lower-cased when the address is plain ASCII.
///
/// Excluded on purpose (left to email-validator): non-ASCII, quoted local
/// parts, any `--` in the domain (IDNA rules, Punycode), special-use TLDs.
pub fn email(raw: &str) -> Normalised {
    if !raw.is_ascii() {
        return Normalised::Unsure;
    }
    let text = strip_ascii(raw);
    if text.is_empty() {
        return Normalised::Invalid;
    }
    if text.len() > MAX_EMAIL_LENGTH {
        return Normalised::Unsure;
    }
    let lowered = text.to_ascii_lowercase();
    let Some((local, domain)) = lowered.split_once('@') else {
        return Normalised::Unsure;
    };
    let local_ok = local.split('.').all(|atom| !atom.is_empty() && atom.bytes().all(is_atom_char));
    let mut labels: Vec<&str> = domain.split('.').collect();
    let top = labels.pop().unwrap_or_default();
    let domain_ok = !labels.is_empty() && labels.iter().all(|l| is_label(l)) && is_top_level(top) && !domain.contains("--");
    if local_ok && domain_ok {
        Normalised::Valid(lowered)
    } else {
        Normalised::Unsure
    }
}

/// `normalize_phone`: a `+1` number of ten digits is a possible NANP number and its own E.164 form.
pub fn phone(raw: &str) -> Normalised {
    if !raw.is_ascii() {
        return Normalised::Unsure;
    }
    let text = strip_ascii(raw);
    if text.is_empty() {
        return Normalised::Invalid;
    }
    match text.strip_prefix("+1") {
        Some(digits) if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Normalised::Valid(text.to_owned())
        }
        _ => Normalised::Unsure,
    }
}

/// `normalize_domain`: a sender domain as events give it, read as the domain of `postmaster@<domain>`.
pub fn domain(raw: &str) -> Normalised {
    if !raw.is_ascii() {
        return Normalised::Unsure;
    }
    let text = strip_ascii(raw);
    if text.is_empty() || text.contains('@') {
        return Normalised::Invalid;
    }
    match email(&format!("postmaster@{text}")) {
        Normalised::Valid(address) => Normalised::Valid(email_domain(&address).to_owned()),
        other => other,
    }
}

/// The domain part of a normalised address (`str.rpartition("@")[2]`).
pub fn email_domain(normalised: &str) -> &str {
    normalised.rsplit_once('@').map_or(normalised, |(_, domain)| domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> Normalised {
        Normalised::Valid(text.to_owned())
    }

    #[test]
    fn plain_addresses_are_trimmed_and_lower_cased() {
        assert_eq!(email("  Ann.Lee+x@Example.COM\n"), valid("ann.lee+x@example.com"));
        assert_eq!(email("a@b.c"), valid("a@b.c"));
        assert_eq!(email("\x1ca@b.co\x1f"), valid("a@b.co"));
    }

    #[test]
    fn unusual_addresses_are_left_to_email_validator() {
        for text in ["a@b", "a..b@c.com", "a@-b.com", "a@b--c.com", "a@b.test", "a@b.c0", "\"q\"@b.com", "ä@b.com", "a@b@c.com", "a@b.com."] {
            assert_eq!(email(text), Normalised::Unsure, "{text}");
        }
        assert_eq!(email("   "), Normalised::Invalid);
    }

    #[test]
    fn only_nanp_e164_is_answered() {
        assert_eq!(phone(" +15551234567 "), valid("+15551234567"));
        assert_eq!(phone("+1555123456"), Normalised::Unsure);
        assert_eq!(phone("+442071234567"), Normalised::Unsure);
        assert_eq!(phone("(555) 123-4567"), Normalised::Unsure);
        assert_eq!(phone(""), Normalised::Invalid);
    }

    #[test]
    fn sender_domains_read_as_addresses() {
        assert_eq!(domain(" Lender.Example "), valid("lender.example"));
        assert_eq!(domain("a@b.com"), Normalised::Invalid);
        assert_eq!(domain(" "), Normalised::Invalid);
        assert_eq!(domain("b--c.com"), Normalised::Unsure);
    }

    #[test]
    fn domain_is_after_the_last_at() {
        assert_eq!(email_domain("a@b.com"), "b.com");
    }
}
