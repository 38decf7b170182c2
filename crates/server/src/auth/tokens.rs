//! Tokens: the `name:role:secret` format, the roles, and the lookup of a
//! presented secret in constant time.

use std::fmt;

use subtle::ConstantTimeEq as _;

/// Shortest secret accepted: a guessable token is no token.
pub const MIN_SECRET_LEN: usize = 16;

/// What a token may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: queries, status, GetRun/WatchRun.
    Read,
    /// Writes: publishing events, starting and changing simulator runs.
    Write,
    /// Operations: worker control (pause, faults, concurrency).
    Admin,
}

impl Role {
    /// The name used in token files and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected read, write or admin"
            )),
        }
    }
}

/// Who made a call: the name and role of the token presented. Put in the
/// request's extensions by [`crate::auth::AuthLayer`] (absent when auth is
/// off or the RPC is open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name (never its secret).
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Why the tokens could not be loaded (at start, before binding).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The tokens file could not be read.
    #[error("cannot read --auth-tokens-file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `name:role:secret`, or breaks a rule.
    #[error("{origin}: token line {line}: {reason}")]
    Invalid {
        /// Where the tokens came from.
        origin: String,
        /// 1-based line (entry, for --auth-tokens).
        line: usize,
        /// What is wrong, never quoting the secret.
        reason: String,
    },
    /// Tokens were configured, but none is there.
    #[error("{0}: no tokens (leave both token flags out to turn authentication off)")]
    Empty(String),
}

#[derive(Clone)]
struct Entry {
    identity: Identity,
    secret: Vec<u8>,
}

/// The tokens a server accepts.
#[derive(Clone)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

impl fmt::Debug for TokenSet {
    /// Names and roles only: secrets never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| format!("{}:{}", e.identity.name, e.identity.role)),
            )
            .finish()
    }
}

impl TokenSet {
    /// Parses `name:role:secret` lines; `source` names them in errors.
    /// Names and secrets must be unique; names are `[A-Za-z0-9._-]+`;
    /// secrets at least [`MIN_SECRET_LEN`] bytes, without whitespace.
    pub fn parse(text: &str, source: &str) -> Result<Self, AuthError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |reason: String| AuthError::Invalid {
                origin: source.to_owned(),
                line: i + 1,
                reason,
            };
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(invalid("expected name:role:secret".to_owned()));
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(invalid(format!(
                    "name {name:?} must be 1 or more of [A-Za-z0-9._-]"
                )));
            }
            let role: Role = role.parse().map_err(invalid)?;
            if secret.len() < MIN_SECRET_LEN || secret.chars().any(char::is_whitespace) {
                return Err(invalid(format!(
                    "the secret of {name:?} must be at least {MIN_SECRET_LEN} bytes, without spaces"
                )));
            }
            if entries.iter().any(|e| e.identity.name == name) {
                return Err(invalid(format!("name {name:?} appears twice")));
            }
            if entries.iter().any(|e| e.secret == secret.as_bytes()) {
                return Err(invalid(format!(
                    "the secret of {name:?} is another token's"
                )));
            }
            entries.push(Entry {
                identity: Identity {
                    name: name.to_owned(),
                    role,
                },
                secret: secret.as_bytes().to_vec(),
            });
        }
        if entries.is_empty() {
            return Err(AuthError::Empty(source.to_owned()));
        }
        Ok(Self { entries })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: an empty set does not parse.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity of `presented`, if it is one of the secrets. Every
    /// secret is compared, each in constant time for its length.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Identity> {
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.secret.as_slice().ct_eq(presented)) {
                found = Some(&entry.identity);
            }
        }
        found.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "# comment\n\nci:write:0123456789abcdef\nops:admin:fedcba9876543210:with:colons\n";

    /// The documented format parses; secrets are found, others are not.
    #[test]
    fn parses_and_authenticates() {
        let set = TokenSet::parse(GOOD, "f").unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.authenticate(b"0123456789abcdef"),
            Some(Identity {
                name: "ci".into(),
                role: Role::Write
            })
        );
        assert_eq!(
            set.authenticate(b"fedcba9876543210:with:colons")
                .unwrap()
                .role,
            Role::Admin
        );
        assert_eq!(set.authenticate(b"0123456789abcde"), None);
        assert_eq!(set.authenticate(b""), None);
        assert!(!format!("{set:?}").contains("0123"), "{set:?}");
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    }

    /// Bad lines name the line and never quote the secret.
    #[test]
    fn bad_lines_are_refused() {
        for (text, want) in [
            ("a:write", "line 1: expected name:role:secret"),
            ("a:root:0123456789abcdef", "unknown role"),
            ("a:read:short", "at least 16 bytes"),
            ("a b:read:0123456789abcdef", "must be 1 or more"),
            (
                "a:read:0123456789abcdef\na:write:0123456789abcdeX",
                "line 2: name \"a\" appears twice",
            ),
            (
                "a:read:0123456789abcdef\nb:write:0123456789abcdef",
                "another token's",
            ),
        ] {
            let err = TokenSet::parse(text, "f").unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        assert!(matches!(
            TokenSet::parse("# only\n", "f"),
            Err(AuthError::Empty(_))
        ));
    }
}
