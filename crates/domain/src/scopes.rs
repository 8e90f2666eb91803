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

/// `x:ro` is granted by `x:rw` among `scopes`.
fn grants_through_rw<'a>(mut scopes: impl Iterator<Item = &'a str>, scope: &str) -> bool {
    match scope.strip_suffix(":ro") {
        Some(base) => scopes.any(|s| s.strip_suffix(":rw") == Some(base)),
        None => false,
    }
}

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
        Self::from_static(Self::default_list(kind, role))
    }

    fn default_list(kind: AgentKind, role: Role) -> &'static [&'static str] {
        match (kind, role) {
            (AgentKind::Bot, _) => BOT,
            (_, Role::Owner | Role::Administrator) => ALL_SCOPES,
            (_, Role::Normal) => NORMAL,
        }
    }

    /// Whether the set grants `scope` (`x:ro` is granted by `x:rw`).
    pub fn has(&self, scope: &str) -> bool {
        self.0.contains(scope) || grants_through_rw(self.0.iter().map(String::as_str), scope)
    }

    /// Whether the default scopes of `kind` / `role` grant `scope`: what
    /// `ScopeSet::defaults(kind, role).has(scope)` answers, without
    /// building the set (this runs per session on every push).
    pub fn role_grants(kind: AgentKind, role: Role, scope: &str) -> bool {
        let list = Self::default_list(kind, role);
        list.contains(&scope) || grants_through_rw(list.iter().copied(), scope)
    }

    /// Whether a session grants `scope`: its role does, and its token's
    /// scopes (`None`: the role's defaults) do too. The same answer as
    /// `token.intersect(&ScopeSet::defaults(kind, role)).has(scope)`.
    pub fn session_grants(
        token: Option<&ScopeSet>,
        kind: AgentKind,
        role: Role,
        scope: &str,
    ) -> bool {
        Self::role_grants(kind, role, scope) && token.is_none_or(|t| t.has(scope))
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
    fn session_grants_answers_like_the_intersection() {
        // Every scope in both modes, against tokens that each hold a
        // different mix of modes.
        let scopes: Vec<String> = ALL_SCOPES
            .iter()
            .flat_map(|s| {
                let base = s.strip_suffix(":rw").unwrap_or(s);
                [format!("{base}:ro"), format!("{base}:rw")]
            })
            .collect();
        let tokens: Vec<ScopeSet> = (0..6)
            .map(|k| {
                let picked: Vec<&String> = scopes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (i + k) % 3 == 0 || (i * k) % 5 == 1)
                    .map(|(_, s)| s)
                    .collect();
                ScopeSet::parse(&picked).unwrap()
            })
            .collect();
        let mut checked = 0;
        for kind in [AgentKind::Agent, AgentKind::Bot] {
            for role in [Role::Owner, Role::Administrator, Role::Normal] {
                let defaults = ScopeSet::defaults(kind, role);
                for scope in &scopes {
                    assert_eq!(
                        ScopeSet::role_grants(kind, role, scope),
                        defaults.has(scope),
                        "{kind:?} {role:?} {scope}"
                    );
                    assert_eq!(
                        ScopeSet::session_grants(None, kind, role, scope),
                        defaults.has(scope)
                    );
                    for t in &tokens {
                        assert_eq!(
                            ScopeSet::session_grants(Some(t), kind, role, scope),
                            t.intersect(&defaults).has(scope),
                            "{kind:?} {role:?} {scope} {t:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 3 * 2 * ALL_SCOPES.len() * tokens.len());
    }

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
