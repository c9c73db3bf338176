//! Masking of single string values. Each function appends the masked form
//! of `value` to `out` (a scratch buffer the caller clears and reuses), so
//! masking a column allocates nothing per row.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::MaskKind;

/// What a value that cannot be masked meaningfully becomes.
pub(crate) const REDACTED: &str = "***";

/// Appends the masked form of `value` to `out`.
pub(crate) fn mask_into(kind: MaskKind, value: &str, out: &mut String) {
    match kind {
        MaskKind::Email => mask_email(value, out),
        MaskKind::Ip => mask_ip(value, out),
        MaskKind::Phone => mask_digits(value, 2, out),
        MaskKind::Card => mask_digits(value, 4, out),
    }
}

/// `john.doe@example.com` → `j***@example.com`: the first character of the
/// local part and the whole domain (after the last `@`) are kept. Without
/// `@`, `***`.
fn mask_email(value: &str, out: &mut String) {
    match value.rfind('@') {
        None => out.push_str(REDACTED),
        Some(at) => {
            if let Some(first) = value[..at].chars().next() {
                out.push(first);
            }
            out.push_str(REDACTED);
            out.push_str(&value[at..]);
        }
    }
}

/// IPv4: the last octet becomes 0. IPv6: the first three groups are kept,
/// the rest become 0. Surrounding whitespace is ignored; anything that does
/// not parse as an address (ports, CIDR suffixes, zone ids included)
/// becomes `***`.
fn mask_ip(value: &str, out: &mut String) {
    match value.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            let _ = write!(out, "{}", std::net::Ipv4Addr::new(a, b, c, 0));
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            let masked = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            let _ = write!(out, "{masked}");
        }
        Err(_) => out.push_str(REDACTED),
    }
}

/// Keeps the last `keep` ASCII digits, turns every other ASCII digit into
/// `*` and keeps all other characters (separators, `+`, spaces). A value
/// without any digit becomes `***`.
fn mask_digits(value: &str, keep: usize, out: &mut String) {
    let total = value.bytes().filter(u8::is_ascii_digit).count();
    if total == 0 {
        out.push_str(REDACTED);
        return;
    }
    let hide = total.saturating_sub(keep);
    let mut seen = 0usize;
    for c in value.chars() {
        if c.is_ascii_digit() {
            seen += 1;
            out.push(if seen > hide { c } else { '*' });
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: MaskKind, v: &str) -> String {
        let mut out = String::new();
        mask_into(kind, v, &mut out);
        out
    }

    #[test]
    fn email_values() {
        assert_eq!(m(MaskKind::Email, "john.doe@example.com"), "j***@example.com");
        assert_eq!(m(MaskKind::Email, "a@b.co"), "a***@b.co");
        assert_eq!(m(MaskKind::Email, "@example.com"), "***@example.com");
        assert_eq!(m(MaskKind::Email, "\"x@y\"@example.com"), "\"***@example.com");
        assert_eq!(m(MaskKind::Email, "émile@exemple.fr"), "é***@exemple.fr");
        assert_eq!(m(MaskKind::Email, "not an email"), "***");
        assert_eq!(m(MaskKind::Email, ""), "***");
    }

    #[test]
    fn ip_values() {
        assert_eq!(m(MaskKind::Ip, "10.1.2.3"), "10.1.2.0");
        assert_eq!(m(MaskKind::Ip, " 192.168.0.255 "), "192.168.0.0");
        assert_eq!(m(MaskKind::Ip, "2001:db8:85a3::8a2e:370:7334"), "2001:db8:85a3::");
        assert_eq!(m(MaskKind::Ip, "2001:0db8:85a3:0000:0000:8a2e:0370:7334"), "2001:db8:85a3::");
        assert_eq!(m(MaskKind::Ip, "::1"), "::");
        assert_eq!(m(MaskKind::Ip, "10.1.2"), "***");
        assert_eq!(m(MaskKind::Ip, "10.1.2.3:443"), "***");
        assert_eq!(m(MaskKind::Ip, "300.1.2.3"), "***");
        assert_eq!(m(MaskKind::Ip, "localhost"), "***");
        assert_eq!(m(MaskKind::Ip, ""), "***");
    }

    #[test]
    fn phone_values() {
        assert_eq!(m(MaskKind::Phone, "+44 20 7946 0958"), "+** ** **** **58");
        assert_eq!(m(MaskKind::Phone, "(555) 123-4567"), "(***) ***-**67");
        assert_eq!(m(MaskKind::Phone, "7"), "7");
        assert_eq!(m(MaskKind::Phone, "unknown"), "***");
        assert_eq!(m(MaskKind::Phone, ""), "***");
    }

    #[test]
    fn card_values() {
        assert_eq!(m(MaskKind::Card, "4111 1111 1111 1234"), "**** **** **** 1234");
        assert_eq!(m(MaskKind::Card, "4111-1111-1111-1234"), "****-****-****-1234");
        assert_eq!(m(MaskKind::Card, "4111111111111234"), "************1234");
        assert_eq!(m(MaskKind::Card, "n/a"), "***");
    }
}
