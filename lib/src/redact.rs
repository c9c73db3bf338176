//! Secrets out of text: SAS tokens and passwords are removed from URLs and
//! from messages that embed them (errors rendered by storage libraries)
//! before anything is logged, reported or stored. Part of the foundation so
//! the crate's error type can render every message through it.

use url::Url;

/// Removes the query string and any password from a URL-ish string.
pub fn redact(s: &str) -> String {
    match Url::parse(s) {
        Ok(mut url) if url.scheme() != "file" || url.query().is_some() => {
            if url.query().is_some() {
                url.set_query(Some("REDACTED"));
            }
            if url.password().is_some() {
                let _ = url.set_password(Some("REDACTED"));
            }
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => match s.find('?') {
            Some(i) => format!("{}?REDACTED", &s[..i]),
            None => s.to_string(),
        },
    }
}

/// Removes query strings (SAS tokens) and passwords from every URL inside a
/// free-text message, e.g. an error rendered by a storage library.
pub fn scrub(message: &str) -> String {
    static URL: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = URL.get_or_init(|| {
        regex::Regex::new(r"(?P<base>[a-z][a-z0-9+.-]*://[^\s?'\x22]*)\?[^\s'\x22]*").expect("valid regex")
    });
    let out = re.replace_all(message, "$base?REDACTED");
    // `sig=` outside a URL (e.g. a bare SAS token echoed back) goes too.
    static SIG: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let sig =
        SIG.get_or_init(|| regex::Regex::new(r"(?i)(sig|se|sv|sp|st|spr|srt|ss)=[^&\s'\x22]+").expect("valid regex"));
    if out.contains("REDACTED") || !sig.is_match(&out) {
        return out.into_owned();
    }
    sig.replace_all(&out, "$1=REDACTED").into_owned()
}
