//! Permission rules for status methods.

use crate::model::{Agent, AgentKind, Role, RoutingStatus};

/// Why a status change is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusRefusal {
    /// The requester may not change this agent's status.
    NotPermitted,
    /// Agents may only choose `accepting_chats` or `not_accepting_chats`.
    StatusNotAllowed,
}

/// Whether `requester` may set `target`'s routing status to `status`.
///
/// Everyone may set their own status. Owners and administrators may set any
/// agent's or bot's status. A normal agent may set only its own.
pub fn may_set_routing_status(
    requester: &Agent,
    target: &Agent,
    status: RoutingStatus,
) -> Result<(), StatusRefusal> {
    if target.kind == AgentKind::Agent && status == RoutingStatus::Offline {
        return Err(StatusRefusal::StatusNotAllowed);
    }
    if requester.id == target.id {
        return Ok(());
    }
    match requester.role {
        Role::Owner | Role::Administrator => Ok(()),
        Role::Normal => Err(StatusRefusal::NotPermitted),
    }
}

/// Whether `requester` may see `target`'s routing status in
/// `list_routing_statuses` and receive its `routing_status_set` pushes.
///
/// Every agent of the organization may (the vendor grants `agents--all:ro` to
/// every agent by default); scopes narrow this in a later issue.
pub fn may_see_routing_status(_requester: &Agent, _target: &Agent) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentId, DEFAULT_MAX_CHATS};

    fn agent(id: &str, role: Role, kind: AgentKind) -> Agent {
        Agent {
            id: AgentId(id.into()),
            kind,
            name: id.into(),
            role,
            max_chats: DEFAULT_MAX_CHATS,
            login_status: RoutingStatus::AcceptingChats,
            groups: vec![(0, crate::model::GroupPriority::Normal)],
            suspended: false,
            profile: Default::default(),
        }
    }

    #[test]
    fn status_permissions() {
        let owner = agent("o", Role::Owner, AgentKind::Agent);
        let admin = agent("a", Role::Administrator, AgentKind::Agent);
        let normal = agent("n", Role::Normal, AgentKind::Agent);
        let other = agent("m", Role::Normal, AgentKind::Agent);
        let bot = agent("b", Role::Normal, AgentKind::Bot);
        use RoutingStatus::*;
        assert_eq!(
            may_set_routing_status(&normal, &normal, AcceptingChats),
            Ok(())
        );
        assert_eq!(
            may_set_routing_status(&normal, &other, AcceptingChats),
            Err(StatusRefusal::NotPermitted)
        );
        assert_eq!(
            may_set_routing_status(&owner, &other, NotAcceptingChats),
            Ok(())
        );
        assert_eq!(
            may_set_routing_status(&admin, &other, NotAcceptingChats),
            Ok(())
        );
        assert_eq!(
            may_set_routing_status(&admin, &other, Offline),
            Err(StatusRefusal::StatusNotAllowed)
        );
        assert_eq!(may_set_routing_status(&admin, &bot, Offline), Ok(()));
        assert_eq!(
            may_set_routing_status(&normal, &bot, Offline),
            Err(StatusRefusal::NotPermitted)
        );
    }
}
