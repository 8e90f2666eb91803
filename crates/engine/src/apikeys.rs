//! API key + secret exchange (after customer-service platforms such as
//! Inbenta's): a server-side integration trades its API key and secret for a
//! short-lived access token acting as the key's agent, and refreshes it
//! before it expires. Keys, secrets and tokens are stored as hashes only.

use crate::Engine;
use crate::auth::{api_key_hash, authenticate, hash_secret, now_secs};
use crate::connection::Side;
use crate::error::err;
use crate::push::{commit, reserve};
use crate::state::TokenEntry;
use chatgate_domain::OrgId;
use chatgate_protocol::chats::ApiAccessToken;
use chatgate_protocol::{ErrorBody, ErrorType};
use chatgate_store::{Op, TokenKind};

impl Engine {
    /// `POST /v1/auth`: API key and secret → access token.
    pub async fn exchange_api_key(
        &self,
        key: &str,
        secret: &str,
    ) -> Result<ApiAccessToken, ErrorBody> {
        let entry = self
            .inner
            .tokens
            .get(&api_key_hash(key, secret))
            .map(|e| e.value().clone())
            .filter(|e| e.kind == TokenKind::ApiKey)
            .ok_or_else(|| err(ErrorType::Authentication, "invalid API key or secret"))?;
        self.issue_access_token(entry, None).await
    }

    /// `POST /v1/refresh_token`: a valid access token → a new one; the old
    /// one is revoked.
    pub async fn refresh_access_token(
        &self,
        authorization: &str,
    ) -> Result<ApiAccessToken, ErrorBody> {
        let entry = authenticate(&self.inner, authorization, Side::Agent)?;
        if entry.kind != TokenKind::Access {
            return Err(err(
                ErrorType::Authentication,
                "only access tokens from /v1/auth can be refreshed",
            ));
        }
        let old = authorization
            .trim()
            .split_once(' ')
            .map(|(_, t)| hash_secret(t.trim()));
        self.issue_access_token(entry, old).await
    }

    /// Whether `authorization` is a valid agent credential (for `/v1/apis`).
    pub fn check_agent_credentials(&self, authorization: &str) -> Result<(), ErrorBody> {
        authenticate(&self.inner, authorization, Side::Agent).map(|_| ())
    }

    async fn issue_access_token(
        &self,
        owner: TokenEntry,
        revoke: Option<[u8; 32]>,
    ) -> Result<ApiAccessToken, ErrorBody> {
        let org = self
            .org(&owner.org)
            .ok_or_else(|| err(ErrorType::Authentication, "invalid API key or secret"))?;
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let hash = hash_secret(&token);
        let now = now_secs();
        let ttl = self.inner.config.access_token_ttl;
        let expires_at = now + ttl as i64;
        let reservation = reserve(&self.inner.store)?;
        let pending = {
            let state = org.lock();
            let agent = state
                .agents
                .get(&owner.agent)
                .ok_or_else(|| err(ErrorType::Authentication, "invalid API key or secret"))?;
            if agent.agent.suspended {
                return Err(err(ErrorType::RequesterSuspended, "Requester suspended"));
            }
            let mut ops = vec![Op::PutToken {
                hash,
                org: OrgId(owner.org.clone()),
                agent: owner.agent.clone(),
                kind: TokenKind::Access,
                created_at: now,
                expires_at: Some(expires_at),
            }];
            if let Some(old) = revoke {
                ops.push(Op::RevokeToken { hash: old, at: now });
                self.inner.tokens.remove(&old);
            }
            commit(reservation, ops, Vec::new())
        };
        pending.wait().await?;
        self.inner.tokens.insert(
            hash,
            TokenEntry {
                scopes: None,
                org: owner.org,
                agent: owner.agent,
                kind: TokenKind::Access,
                expires_at: Some(expires_at),
            },
        );
        Ok(ApiAccessToken {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: ttl,
            expires_at,
        })
    }
}
