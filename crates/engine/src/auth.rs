//! Credentials: `Bearer <token>` and `Basic base64(<agent id>:<token>)`.
//! Secrets are compared by SHA-256 only; the clear value is never stored.

use crate::Inner;
use crate::connection::Side;
use crate::error::err;
use crate::state::TokenEntry;
use base64::Engine as _;
use chatgate_protocol::{ErrorBody, ErrorType};
use sha2::{Digest, Sha256};

/// SHA-256 of a secret, the form in which secrets are stored and looked up.
/// Tokens are long random strings, so a fast hash is the right tool (a
/// password hash would only add latency to every login).
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The stored form of an API key with its secret.
pub(crate) fn api_key_hash(key: &str, secret: &str) -> [u8; 32] {
    hash_secret(&format!("api-key:{key}:{secret}"))
}

fn invalid() -> ErrorBody {
    err(ErrorType::Authentication, "Invalid access token")
}

/// Resolves an `Authorization` value (or RTM `login.token`) to its owner on
/// `side`: a customer token is no agent credential and vice versa; an
/// expired token is refused.
pub(crate) fn authenticate(
    inner: &Inner,
    credentials: &str,
    side: Side,
) -> Result<TokenEntry, ErrorBody> {
    let entry = lookup(inner, credentials)?;
    if entry.side() != Some(side) {
        return Err(invalid());
    }
    if let Some(exp) = entry.expires_at
        && exp <= now_secs()
    {
        return Err(err(ErrorType::Authentication, "Access token expired"));
    }
    Ok(entry)
}

/// How long an expired credential is still recognized (and answered
/// "Access token expired") before [`crate::Engine::sweep_tokens`] forgets it.
pub const EXPIRED_TOKEN_GRACE_SECS: i64 = 3600;

impl crate::Engine {
    /// Forgets credentials that expired more than
    /// [`EXPIRED_TOKEN_GRACE_SECS`] before `now` (Unix seconds): from memory
    /// and, in the same step, from the store. Customer tokens are issued on
    /// every widget start; without this they would pile up for the life of
    /// the process. Returns how many were forgotten. The server calls it
    /// periodically; tests pass the clock they want.
    pub async fn sweep_tokens(&self, now: i64) -> Result<usize, ErrorBody> {
        let before = now - EXPIRED_TOKEN_GRACE_SECS;
        let mut n = 0;
        self.inner.tokens.retain(|_, e| {
            let keep = e.expires_at.is_none_or(|exp| exp >= before);
            n += usize::from(!keep);
            keep
        });
        crate::push::submit(
            &self.inner.store,
            vec![chatgate_store::Op::PurgeExpiredTokens { before }],
            Vec::new(),
        )?
        .wait()
        .await?;
        Ok(n)
    }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn lookup(inner: &Inner, credentials: &str) -> Result<TokenEntry, ErrorBody> {
    let credentials = credentials.trim();
    let (scheme, rest) = credentials.split_once(' ').ok_or_else(|| {
        err(
            ErrorType::Authentication,
            "expected `Bearer <token>` or `Basic <base64>`",
        )
    })?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        inner
            .tokens
            .get(&hash_secret(rest))
            .map(|e| e.value().clone())
            .ok_or_else(invalid)
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                err(
                    ErrorType::Authentication,
                    "Basic credentials are not valid base64 UTF-8",
                )
            })?;
        let (account, secret) = decoded.split_once(':').ok_or_else(|| {
            err(
                ErrorType::Authentication,
                "Basic credentials must be `<agent id>:<token>`",
            )
        })?;
        let entry = inner
            .tokens
            .get(&hash_secret(secret))
            .map(|e| e.value().clone())
            .ok_or_else(invalid)?;
        if entry.agent.eq_ignore_ascii_case(account) {
            Ok(entry)
        } else {
            Err(invalid())
        }
    } else {
        Err(err(
            ErrorType::Authentication,
            format!("unsupported authorization scheme `{scheme}`"),
        ))
    }
}
