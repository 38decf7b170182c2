//! ListDevices' label filter and page tokens.

use std::collections::HashMap;

use crate::error::QueryError;

/// A parsed `key=value[,key=value...]` label selector; every pair must
/// match. Empty matches every device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter {
    pairs: Vec<(String, String)>,
}

impl LabelFilter {
    /// Parses the `filter` field. Blanks around pairs, keys and values are
    /// ignored; an empty pair, a pair without `=`, an empty key or a key
    /// given twice is INVALID_ARGUMENT naming `filter`.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { pairs });
        }
        for term in text.split(',') {
            let Some((key, value)) = term.split_once('=') else {
                return Err(QueryError::invalid(
                    "filter",
                    format!("expected key=value[,key=value...], got {term:?}"),
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(QueryError::invalid(
                    "filter",
                    format!("empty label key in {term:?}"),
                ));
            }
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(QueryError::invalid(
                    "filter",
                    format!("label {key:?} given twice"),
                ));
            }
            pairs.push((key.to_owned(), value.to_owned()));
        }
        Ok(Self { pairs })
    }

    /// The (key, value) pairs, in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Whether it matches every device.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether `labels` has every pair.
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.pairs
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|actual| actual == v))
    }
}

/// Version of the page token layout: a token of another version is
/// refused rather than misread.
const TOKEN_VERSION: &str = "1";

/// The token of the page after `last`, bound to `filter`: hex of
/// `1:<filter length>:<filter><last device id>`.
pub fn encode_token(filter: &str, last: &str) -> String {
    let plain = format!("{TOKEN_VERSION}:{}:{filter}{last}", filter.len());
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The device id a page token resumes after; `None` for the first page.
/// A token this server did not issue, or issued for another filter, is
/// INVALID_ARGUMENT naming `page_token`.
pub fn decode_token(token: &str, filter: &str) -> Result<Option<String>, QueryError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || QueryError::invalid("page_token", "not a page token issued by this server");
    let plain = unhex(token).ok_or_else(bad)?;
    let rest = plain
        .strip_prefix(TOKEN_VERSION)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(bad)?;
    let (len, rest) = rest.split_once(':').ok_or_else(bad)?;
    let len: usize = len.parse().map_err(|_| bad())?;
    let (issued_for, last) = (rest.get(..len), rest.get(len..));
    let (Some(issued_for), Some(last)) = (issued_for, last) else {
        return Err(bad());
    };
    if issued_for != filter {
        return Err(QueryError::invalid(
            "page_token",
            "the page token was issued for another filter",
        ));
    }
    if last.is_empty() {
        return Err(bad());
    }
    Ok(Some(last.to_owned()))
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn field_of(err: QueryError) -> &'static str {
        match err {
            QueryError::InvalidArgument { field, .. } => field,
            other => panic!("not a bad request: {other:?}"),
        }
    }

    /// Pairs parse with blanks trimmed; all must match.
    #[test]
    fn filter_parses_and_matches() {
        let f = LabelFilter::parse("arch=arm64, zone = eu-1").unwrap();
        assert_eq!(
            f.pairs,
            vec![
                ("arch".to_owned(), "arm64".to_owned()),
                ("zone".to_owned(), "eu-1".to_owned())
            ]
        );
        assert!(f.matches(&labels(&[("arch", "arm64"), ("zone", "eu-1"), ("x", "y")])));
        assert!(!f.matches(&labels(&[("arch", "arm64")])));
        assert!(!f.matches(&labels(&[("arch", "amd64"), ("zone", "eu-1")])));
        let all = LabelFilter::parse("").unwrap();
        assert!(all.matches(&HashMap::new()));
        // A value may contain '='; only the first one splits.
        let f = LabelFilter::parse("k=a=b").unwrap();
        assert!(f.matches(&labels(&[("k", "a=b")])));
    }

    /// Malformed selectors are INVALID_ARGUMENT naming `filter`.
    #[test]
    fn filter_rejects_malformed() {
        for bad in ["arch", "arch=arm64,", "=x", "a=1,a=2", ",", "a=1,,b=2"] {
            assert_eq!(
                field_of(LabelFilter::parse(bad).unwrap_err()),
                "filter",
                "{bad}"
            );
        }
    }

    /// A token round-trips, is bound to its filter and is pinned in format.
    #[test]
    fn tokens_round_trip() {
        assert_eq!(encode_token("", "d"), "313a303a64"); // "1:0:d"
        assert_eq!(decode_token("", "").unwrap(), None);
        for (filter, last) in [("", "dev-1"), ("arch=arm64", "gpu:node.7"), ("a=1:2", "x")] {
            let token = encode_token(filter, last);
            assert_eq!(decode_token(&token, filter).unwrap().as_deref(), Some(last));
        }
        let token = encode_token("arch=arm64", "dev-1");
        assert_eq!(
            field_of(decode_token(&token, "arch=amd64").unwrap_err()),
            "page_token"
        );
    }

    /// Anything else is INVALID_ARGUMENT naming `page_token`.
    #[test]
    fn tokens_reject_garbage() {
        for bad in [
            "garbage",
            "31",
            "313a303a",   // "1:0:" has no device
            "323a303a64", // version 2
            "313a393a64", // filter length past the end
            "313a783a64", // non-numeric length
            "f",          // odd length
            "ff",         // not UTF-8
        ] {
            assert_eq!(
                field_of(decode_token(bad, "").unwrap_err()),
                "page_token",
                "{bad}"
            );
        }
    }
}
