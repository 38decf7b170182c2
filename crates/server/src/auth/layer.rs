//! [`AuthLayer`]: the check every server applies to every call, before
//! the call reaches its service.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::KeyValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::auth::ERROR_DOMAIN;
use crate::auth::policy::{Policy, Requirement};
use crate::auth::tokens::{Identity, Role, TokenSet};

/// Why a call was refused: the `google.rpc.ErrorInfo` reason, and the
/// `reason` label of `auth_requests_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No `authorization` header.
    Missing,
    /// Not `Bearer <secret>`, or no such secret.
    Invalid,
    /// A known token whose role is below the RPC's.
    Role {
        /// The RPC's.
        required: Role,
        /// The token's.
        held: Role,
    },
}

impl Refused {
    /// The ErrorInfo reason.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Missing => "TOKEN_MISSING",
            Refused::Invalid => "TOKEN_INVALID",
            Refused::Role { .. } => "ROLE_INSUFFICIENT",
        }
    }

    /// The one mapping of a refusal to a gRPC status.
    pub fn to_status(self, path: &str) -> Status {
        let (code, message) = match self {
            Refused::Missing => (
                Code::Unauthenticated,
                format!("{path} needs a token: send authorization: Bearer <token>"),
            ),
            Refused::Invalid => (
                Code::Unauthenticated,
                "the authorization header is not Bearer <token> of a known token".to_owned(),
            ),
            Refused::Role { required, held } => (
                Code::PermissionDenied,
                format!("{path} needs a {required} token; this one is {held}"),
            ),
        };
        let mut metadata = HashMap::from([("rpc".to_owned(), path.to_owned())]);
        if let Refused::Role { required, held } = self {
            metadata.insert("required_role".to_owned(), required.to_string());
            metadata.insert("role".to_owned(), held.to_string());
        }
        Status::with_error_details(
            code,
            message,
            ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, metadata),
        )
    }
}

/// Checks `authorization` against `tokens` for an RPC requiring `required`.
pub fn check(
    tokens: &TokenSet,
    required: Role,
    header: Option<&http::HeaderValue>,
) -> Result<Identity, Refused> {
    let header = header.ok_or(Refused::Missing)?;
    let secret = header
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .or_else(|| header.as_bytes().strip_prefix(b"bearer "))
        .ok_or(Refused::Invalid)?;
    let identity = tokens.authenticate(secret).ok_or(Refused::Invalid)?;
    if identity.role < required {
        return Err(Refused::Role {
            required,
            held: identity.role,
        });
    }
    Ok(identity)
}

/// Adds [`AuthService`] around a server's routes; without tokens it lets
/// everything through.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<TokenSet>>,
    policy: Arc<Policy>,
    refused: opentelemetry::metrics::Counter<u64>,
}

impl AuthLayer {
    /// Checks calls against `tokens` (none: auth off) and `policy`.
    pub fn new(tokens: Option<Arc<TokenSet>>, policy: Policy) -> Self {
        let refused = opentelemetry::global::meter("testbed")
            .u64_counter("auth.requests.refused")
            .with_description("Calls refused by authentication, by reason and RPC service")
            .build();
        Self {
            tokens,
            policy: Arc::new(policy),
            refused,
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(tokens) = &self.layer.tokens else {
            return Box::pin(self.inner.call(request));
        };
        let path = request.uri().path();
        let required = match self.layer.policy.requirement(path) {
            Requirement::Open => return Box::pin(self.inner.call(request)),
            Requirement::Role(role) => role,
        };
        match check(
            tokens,
            required,
            request.headers().get(http::header::AUTHORIZATION),
        ) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
                Box::pin(self.inner.call(request))
            }
            Err(refused) => {
                let path = path.to_owned();
                let service = path
                    .trim_start_matches('/')
                    .split_once('/')
                    .map_or("", |(s, _)| s)
                    .to_owned();
                self.layer.refused.add(
                    1,
                    &[
                        KeyValue::new("reason", refused.reason()),
                        KeyValue::new("rpc.service", service),
                    ],
                );
                let peer = request
                    .extensions()
                    .get::<crate::conn::ConnInfo>()
                    .and_then(|info| info.tcp.remote_addr)
                    .map(|addr| addr.to_string())
                    .unwrap_or_default();
                let certificate =
                    crate::conn::client_subject(request.extensions()).unwrap_or_default();
                tracing::warn!(
                    target: "testbed::audit",
                    rpc = %path, reason = refused.reason(), peer = %peer, certificate = %certificate,
                    "call refused by authentication"
                );
                let response = refused.to_status(&path).into_http::<R>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> TokenSet {
        TokenSet::parse(
            "reader:read:read-0123456789abcdef\nwriter:write:write-0123456789abcdef",
            "t",
        )
        .unwrap()
    }

    fn header(value: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(value).unwrap()
    }

    /// Missing and unknown tokens are UNAUTHENTICATED; a known one below
    /// the RPC's role is PERMISSION_DENIED; enough is the identity.
    #[test]
    fn checks_and_codes() {
        let t = tokens();
        assert_eq!(check(&t, Role::Read, None), Err(Refused::Missing));
        assert_eq!(
            check(&t, Role::Read, Some(&header("Basic x"))),
            Err(Refused::Invalid)
        );
        assert_eq!(
            check(
                &t,
                Role::Read,
                Some(&header("Bearer nope-0123456789abcdef"))
            ),
            Err(Refused::Invalid)
        );
        let denied = check(
            &t,
            Role::Write,
            Some(&header("Bearer read-0123456789abcdef")),
        );
        assert_eq!(
            denied,
            Err(Refused::Role {
                required: Role::Write,
                held: Role::Read
            })
        );
        let who = check(
            &t,
            Role::Write,
            Some(&header("Bearer write-0123456789abcdef")),
        )
        .unwrap();
        assert_eq!(who.name, "writer");

        let status = Refused::Missing.to_status("/a.B/C");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "TOKEN_MISSING"
        );
        let status = denied.unwrap_err().to_status("/a.B/C");
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata["required_role"], "write");
        assert_eq!(info.metadata["role"], "read");
    }
}
