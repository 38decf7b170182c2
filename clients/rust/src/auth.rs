//! Bearer tokens: [`Token`] is one checked, redacted secret; [`Bearer`] is
//! the tonic interceptor that sends it as `authorization: Bearer <token>`
//! on every call (the servers' `--auth-tokens-file` checks it).

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

/// A token to send, checked once to be a valid header value. Its `Debug`
/// never shows the secret, and the header is marked sensitive (kept out of
/// HPACK tables).
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token is one word of printable ASCII, without spaces")]
pub struct InvalidToken;

impl std::str::FromStr for Token {
    type Err = InvalidToken;

    /// The secret (what follows `name:role:` in the server's token file).
    fn from_str(secret: &str) -> Result<Self, InvalidToken> {
        if secret.is_empty() || !secret.chars().all(|c| c.is_ascii_graphic()) {
            return Err(InvalidToken);
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {secret}")
            .parse()
            .map_err(|_| InvalidToken)?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

/// Adds the token to every request; without one it is a pass-through, so a
/// client has one type either way.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<Token>);

impl Bearer {
    /// Sends `token` (none: no header).
    pub fn new(token: Option<Token>) -> Self {
        Self(token)
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(Token(value)) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Tokens are one printable word, sent as `Bearer <token>`; Debug hides them.
    #[test]
    fn tokens_parse_and_are_sent() {
        let token: Token = "0123456789abcdef".parse().unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!("a b".parse::<Token>().unwrap_err(), InvalidToken);
        assert_eq!("".parse::<Token>().unwrap_err(), InvalidToken);
        assert_eq!("é".parse::<Token>().unwrap_err(), InvalidToken);
        let sent = Bearer::new(Some(token))
            .call(tonic::Request::new(()))
            .unwrap();
        assert_eq!(
            sent.metadata()
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer 0123456789abcdef"
        );
        let none = Bearer::default().call(tonic::Request::new(())).unwrap();
        assert!(none.metadata().get("authorization").is_none());
    }
}
