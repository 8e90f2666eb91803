//! Scopes: what a credential may do. Strings of the form
//! `resource--range:mode` (`chats--access:rw`); `rw` includes `ro`.

use crate::model::{AgentKind, Role};
use std::collections::BTreeSet;

/// A set of scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<String>);

/// Every scope chatgate checks.
pub const ALL_SCOPES: &[&str] = &[
    "chats--all:rw",
    "chats--access:rw",
    "customers:rw",
    "customers.ban:rw",
    "multicast:rw",
    "agents--all:rw",
    "agents--my:rw",
    "agents-bot--all:rw",
    "agents-bot--my:rw",
    "groups--all:rw",
    "tags--all:rw",
    "tags--groups:rw",
    "properties--my:rw",
];

const NORMAL: &[&str] = &[
    "chats--access:rw",
    "customers:rw",
    "multicast:rw",
    "agents--my:rw",
    "agents--all:ro",
    "agents-bot--all:ro",
    "groups--all:ro",
    "tags--groups:ro",
];

/// What a bot token carries (the vendor's list).
const BOT: &[&str] = &["chats--access:rw", "agents-bot--my:rw", "customers:rw"];

impl ScopeSet {
    /// Parses scope strings; unknown forms are refused.
    pub fn parse<S: AsRef<str>>(scopes: &[S]) -> Result<ScopeSet, String> {
        let mut set = BTreeSet::new();
        for s in scopes {
            let s = s.as_ref();
            let Some((_, mode)) = s.rsplit_once(':') else {
                return Err(format!("scope `{s}` is not of the form resource:mode"));
            };
            if !matches!(mode, "ro" | "rw") {
                return Err(format!("scope `{s}`: the mode must be ro or rw"));
            }
            set.insert(s.to_owned());
        }
        Ok(ScopeSet(set))
    }

    fn from_static(list: &[&str]) -> ScopeSet {
        ScopeSet(list.iter().map(|s| (*s).to_owned()).collect())
    }

    /// The default scopes of an agent's role, or of a bot.
    pub fn defaults(kind: AgentKind, role: Role) -> ScopeSet {
        match (kind, role) {
            (AgentKind::Bot, _) => Self::from_static(BOT),
            (_, Role::Owner | Role::Administrator) => Self::from_static(ALL_SCOPES),
            (_, Role::Normal) => Self::from_static(NORMAL),
        }
    }

    /// Whether the set grants `scope` (`x:ro` is granted by `x:rw`).
    pub fn has(&self, scope: &str) -> bool {
        if self.0.contains(scope) {
            return true;
        }
        match scope.strip_suffix(":ro") {
            Some(base) => self.0.contains(&format!("{base}:rw")),
            None => false,
        }
    }

    /// Whether the set grants any of `scopes` (empty = nothing required).
    pub fn any(&self, scopes: &[&str]) -> bool {
        scopes.is_empty() || scopes.iter().any(|s| self.has(s))
    }

    /// The scopes of both sets (a token narrows its owner's role). A
    /// read-write scope meets a read-only one as read-only.
    pub fn intersect(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = BTreeSet::new();
        for s in &self.0 {
            if other.has(s) {
                out.insert(s.clone());
            } else if let Some(base) = s.strip_suffix(":rw")
                && other.has(&format!("{base}:ro"))
            {
                out.insert(format!("{base}:ro"));
            }
        }
        ScopeSet(out)
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rw_implies_ro_and_intersection_narrows() {
        let normal = ScopeSet::defaults(AgentKind::Agent, Role::Normal);
        assert!(normal.has("chats--access:ro") && normal.has("chats--access:rw"));
        assert!(!normal.has("chats--all:ro"));
        assert!(normal.has("agents--all:ro") && !normal.has("agents--all:rw"));
        assert!(normal.any(&["chats--all:ro", "chats--access:ro"]));
        assert!(normal.any(&[]));
        let token = ScopeSet::parse(&["chats--all:ro", "customers:ro"]).unwrap();
        let effective = token.intersect(&normal);
        assert!(
            !effective.has("chats--all:ro"),
            "a token cannot exceed its role"
        );
        assert!(effective.has("customers:ro") && !effective.has("customers:rw"));
        let owner = ScopeSet::defaults(AgentKind::Agent, Role::Owner);
        assert!(
            ScopeSet::parse(&["chats--all:ro"])
                .unwrap()
                .intersect(&owner)
                .has("chats--all:ro")
        );
        assert!(ScopeSet::parse(&["chats"]).is_err());
        assert!(ScopeSet::parse(&["chats:xx"]).is_err());
        let bot = ScopeSet::defaults(AgentKind::Bot, Role::Owner);
        assert!(bot.has("agents-bot--my:rw") && !bot.has("multicast:rw"));
    }
}
