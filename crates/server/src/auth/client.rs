//! The client side of the tokens: [`Bearer`] adds `authorization: Bearer
//! <token>` to every call of the service it wraps (a tonic `Channel`).

use std::fmt;
use std::task::{Context, Poll};

/// A token to send, checked once (when the flag is parsed) to be a valid
/// header value. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token(http::HeaderValue);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = String;

    /// The secret (what follows `name:role:` in the server's token file).
    fn from_str(secret: &str) -> Result<Self, String> {
        if secret.is_empty() || !secret.chars().all(|c| c.is_ascii_graphic()) {
            return Err("a token is one word of printable ASCII, without spaces".to_owned());
        }
        let mut value = http::HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|_| "a token is printable ASCII".to_owned())?;
        // Kept out of HPACK tables and debug output.
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

/// A service that sends a bearer token with every request; without a
/// token it is a pass-through, so a client has one type either way.
#[derive(Debug, Clone)]
pub struct Bearer<S> {
    inner: S,
    token: Option<Token>,
}

impl<S> Bearer<S> {
    /// Wraps `inner`; no token: no header.
    pub fn new(inner: S, token: Option<Token>) -> Self {
        Self { inner, token }
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for Bearer<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(Token(header)) = &self.token {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, header.clone());
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are one printable word; their Debug hides them.
    #[test]
    fn tokens_parse() {
        let token: Token = "0123456789abcdef".parse().unwrap();
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert!("a b".parse::<Token>().is_err());
        assert!("".parse::<Token>().is_err());
        assert!("é".parse::<Token>().is_err());
    }
}
