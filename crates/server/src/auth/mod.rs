//! Optional bearer-token authentication, one implementation for every
//! testbed server (#23, #34).
//!
//! Tokens are `name:role:secret` lines ([`tokens`]); a client sends
//! `authorization: Bearer <secret>`. Roles are ordered
//! `read` < `write` < `admin`, and each RPC requires one ([`policy`]):
//! a server's services declare theirs when they register
//! ([`crate::GrpcServer::require`]). Health and reflection are always open,
//! so probes and `grpcurl list` need no token. No tokens configured = no
//! authentication at all (a warning is logged when such a server listens on
//! a non-loopback address).
//!
//! Missing, malformed or unknown token: `UNAUTHENTICATED`. A known token
//! whose role is below the RPC's: `PERMISSION_DENIED`. Both carry a
//! `google.rpc.ErrorInfo` (domain [`ERROR_DOMAIN`]) with the reason.
//!
//! # Layout
//! - [`args`]: [`AuthArgs`], the flags (`--auth-tokens-file`,
//!   `--auth-tokens`), flattened into [`crate::ListenArgs`].
//! - [`tokens`]: [`Role`], [`Identity`], [`TokenSet`]: the format, loading,
//!   and the constant-time lookup of a presented secret.
//! - [`policy`]: [`Policy`], which role each RPC path requires.
//! - [`layer`]: [`AuthLayer`], the tower layer every server applies: checks
//!   the header against the policy, puts the [`Identity`] in the request's
//!   extensions for handlers (the simulator's audit trail), refuses the
//!   rest.
//! - [`client`]: [`client::Bearer`], the client side: a service wrapper
//!   that adds the header to every call.
//!
//! # Why `subtle`
//! Comparing a presented secret with `==` stops at the first differing
//! byte, which leaks, by timing, how much of a guess is right. `subtle`
//! (the dalek-cryptography crate behind most Rust cryptography) gives a
//! comparison whose time depends only on the lengths, and is small, with no
//! dependencies; every configured token is compared, with no early exit.

pub mod args;
pub mod client;
pub mod layer;
pub mod policy;
pub mod tokens;

pub use args::AuthArgs;
pub use layer::AuthLayer;
pub use policy::Policy;
pub use tokens::{AuthError, Identity, Role, TokenSet};

/// The domain of the `google.rpc.ErrorInfo` of refused calls.
pub const ERROR_DOMAIN: &str = "testbed";
