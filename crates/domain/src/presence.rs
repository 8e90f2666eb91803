//! An agent's effective routing status, derived from the status it chose and
//! the state of its live connections.

use crate::model::{AgentKind, RoutingStatus};

/// What is known about an agent's presence at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Presence {
    pub kind: AgentKind,
    /// The status chosen by `set_routing_status` (or the login default).
    pub chosen: RoutingStatus,
    /// Number of live RTM connections.
    pub connections: usize,
    /// How many of those connections are marked away.
    pub away_connections: usize,
}

/// The status routing and `list_routing_statuses` see.
///
/// - An agent with no live connection is `offline`.
/// - An agent whose connections are all away is `not_accepting_chats`
///   (auto-away), unless it chose `offline`.
/// - Bots need no connection: their chosen status stands (they act over the
///   Web API).
pub fn effective_status(p: Presence) -> RoutingStatus {
    match p.kind {
        AgentKind::Bot => p.chosen,
        AgentKind::Agent => {
            if p.connections == 0 {
                RoutingStatus::Offline
            } else if p.away_connections >= p.connections
                && p.chosen == RoutingStatus::AcceptingChats
            {
                RoutingStatus::NotAcceptingChats
            } else {
                p.chosen
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RoutingStatus::*;

    fn check(
        kind: AgentKind,
        chosen: RoutingStatus,
        conns: usize,
        away: usize,
        want: RoutingStatus,
    ) {
        let got = effective_status(Presence {
            kind,
            chosen,
            connections: conns,
            away_connections: away,
        });
        assert_eq!(got, want, "{kind:?} {chosen:?} conns={conns} away={away}");
    }

    #[test]
    fn table() {
        check(AgentKind::Agent, AcceptingChats, 0, 0, Offline);
        check(AgentKind::Agent, AcceptingChats, 1, 0, AcceptingChats);
        check(AgentKind::Agent, AcceptingChats, 2, 1, AcceptingChats);
        check(AgentKind::Agent, AcceptingChats, 2, 2, NotAcceptingChats);
        check(AgentKind::Agent, NotAcceptingChats, 1, 0, NotAcceptingChats);
        check(AgentKind::Agent, NotAcceptingChats, 1, 1, NotAcceptingChats);
        check(AgentKind::Bot, AcceptingChats, 0, 0, AcceptingChats);
        check(AgentKind::Bot, Offline, 0, 0, Offline);
    }
}
