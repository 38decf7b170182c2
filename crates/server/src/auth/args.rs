//! [`AuthArgs`]: where a server's tokens come from.

use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::tokens::{AuthError, TokenSet};

/// The token flags every server subcommand shares (flattened into
/// [`crate::ListenArgs`]). Neither given: no authentication.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// A file of tokens, one `name:role:secret` per line (role `read`,
    /// `write` or `admin`; `#` comments and blank lines ignored). When
    /// tokens are configured, every RPC but health and reflection needs
    /// `authorization: Bearer <secret>` with a role at least the RPC's.
    #[arg(long, env = "TESTBED_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Tokens given inline, in the file's format, separated by commas or
    /// newlines (e.g. from a Secret mounted as an environment variable);
    /// added to --auth-tokens-file's.
    #[arg(long, env = "TESTBED_AUTH_TOKENS", hide_env_values = true)]
    pub auth_tokens: Option<String>,
}

impl AuthArgs {
    /// The tokens, or `None` when none are configured (auth off).
    pub fn load(&self) -> Result<Option<Arc<TokenSet>>, AuthError> {
        let mut text = String::new();
        if let Some(path) = &self.auth_tokens_file {
            let file = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                path: path.display().to_string(),
                source,
            })?;
            text.push_str(&file);
            text.push('\n');
        }
        if let Some(inline) = &self.auth_tokens {
            text.push_str(&inline.replace(',', "\n"));
        }
        if self.auth_tokens_file.is_none() && self.auth_tokens.is_none() {
            return Ok(None);
        }
        let source = match (&self.auth_tokens_file, &self.auth_tokens) {
            (Some(path), None) => path.display().to_string(),
            (None, _) => "--auth-tokens".to_owned(),
            (Some(path), Some(_)) => format!("{} and --auth-tokens", path.display()),
        };
        TokenSet::parse(&text, &source).map(|set| Some(Arc::new(set)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No flag: auth off. Inline tokens and a file add up; a file without
    /// tokens, or an unreadable one, stops the start.
    #[test]
    fn loads_from_file_and_inline() {
        assert!(AuthArgs::default().load().unwrap().is_none());
        let path = std::env::temp_dir().join(format!("testbed-tokens-{}", std::process::id()));
        std::fs::write(&path, "a:read:aaaaaaaaaaaaaaaa\n").unwrap();
        let args = AuthArgs {
            auth_tokens_file: Some(path.clone()),
            auth_tokens: Some("b:write:bbbbbbbbbbbbbbbb,c:admin:cccccccccccccccc".to_owned()),
        };
        let set = args.load().unwrap().unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.authenticate(b"cccccccccccccccc").unwrap().name, "c");
        std::fs::write(&path, "# nothing\n").unwrap();
        let only_file = AuthArgs {
            auth_tokens_file: Some(path.clone()),
            auth_tokens: None,
        };
        assert!(matches!(only_file.load(), Err(AuthError::Empty(_))));
        let _ = std::fs::remove_file(&path);
        assert!(matches!(only_file.load(), Err(AuthError::Read { .. })));
    }
}
