//! Who gets a chat: the routing decision, as a pure function of the
//! candidates' state.

use crate::model::{GroupPriority, RoutingStatus};

/// One agent or bot of the chat's group, as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    /// Priority in the chat's group.
    pub priority: GroupPriority,
    /// Effective status (offline without a connection, not accepting while
    /// every connection is away).
    pub status: RoutingStatus,
    /// Active chats the candidate is assigned to.
    pub load: u32,
    pub max_chats: u32,
    /// When the candidate last got a chat (any monotonic unit; lower = idle
    /// longer; never assigned = `i64::MIN`).
    pub last_assigned: i64,
}

impl Candidate<'_> {
    /// Whether the candidate can take one more chat now.
    pub fn can_take(&self) -> bool {
        self.status == RoutingStatus::AcceptingChats
            && self.load < self.max_chats
            && self.priority != GroupPriority::Supervisor
    }
}

fn rank(p: GroupPriority) -> u8 {
    match p {
        GroupPriority::First => 0,
        GroupPriority::Normal => 1,
        GroupPriority::Last => 2,
        GroupPriority::Supervisor => 3,
    }
}

/// What routing decided for a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Assign to this candidate.
    Assign(&'a str),
    /// Somebody of the group accepts chats, but nobody has a free slot: queue.
    Queue,
    /// Nobody of the group accepts chats at all.
    Offline,
}

/// Picks the candidate for a chat.
///
/// - Only candidates that [`Candidate::can_take`] are eligible; supervisors
///   are never auto-assigned.
/// - `previous` (the agent the returning customer last chatted with) wins if
///   eligible.
/// - Otherwise: priority `first` before `normal` before `last`; among equals
///   the least loaded; then the one idle longest; then by id (stable).
pub fn decide<'a>(candidates: &[Candidate<'a>], previous: Option<&str>) -> Decision<'a> {
    if let Some(prev) = previous
        && let Some(c) = candidates.iter().find(|c| c.id == prev && c.can_take())
    {
        return Decision::Assign(c.id);
    }
    let best = candidates
        .iter()
        .filter(|c| c.can_take())
        .min_by_key(|c| (rank(c.priority), c.load, c.last_assigned, c.id));
    match best {
        Some(c) => Decision::Assign(c.id),
        None if candidates.iter().any(|c| {
            c.status == RoutingStatus::AcceptingChats && c.priority != GroupPriority::Supervisor
        }) =>
        {
            Decision::Queue
        }
        None => Decision::Offline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GroupPriority::*;
    use RoutingStatus::*;

    fn c(
        id: &str,
        priority: GroupPriority,
        status: RoutingStatus,
        load: u32,
        max: u32,
        last: i64,
    ) -> Candidate<'_> {
        Candidate {
            id,
            priority,
            status,
            load,
            max_chats: max,
            last_assigned: last,
        }
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, Vec<Candidate>, Option<&str>, Decision)> = vec![
            ("nobody", vec![], None, Decision::Offline),
            (
                "only offline",
                vec![c("a", Normal, Offline, 0, 6, 0)],
                None,
                Decision::Offline,
            ),
            (
                "not accepting",
                vec![c("a", Normal, NotAcceptingChats, 0, 6, 0)],
                None,
                Decision::Offline,
            ),
            (
                "full: queue",
                vec![c("a", Normal, AcceptingChats, 6, 6, 0)],
                None,
                Decision::Queue,
            ),
            (
                "supervisor only",
                vec![c("s", Supervisor, AcceptingChats, 0, 6, 0)],
                None,
                Decision::Offline,
            ),
            (
                "least loaded",
                vec![
                    c("a", Normal, AcceptingChats, 2, 6, 0),
                    c("b", Normal, AcceptingChats, 1, 6, 0),
                ],
                None,
                Decision::Assign("b"),
            ),
            (
                "idle longest",
                vec![
                    c("a", Normal, AcceptingChats, 1, 6, 50),
                    c("b", Normal, AcceptingChats, 1, 6, 10),
                ],
                None,
                Decision::Assign("b"),
            ),
            (
                "first before normal",
                vec![
                    c("bot", First, AcceptingChats, 5, 6, 0),
                    c("a", Normal, AcceptingChats, 0, 6, 0),
                ],
                None,
                Decision::Assign("bot"),
            ),
            (
                "last only when others full",
                vec![
                    c("l", Last, AcceptingChats, 0, 6, 0),
                    c("a", Normal, AcceptingChats, 6, 6, 0),
                ],
                None,
                Decision::Assign("l"),
            ),
            (
                "normal before last",
                vec![
                    c("l", Last, AcceptingChats, 0, 6, 0),
                    c("a", Normal, AcceptingChats, 5, 6, 0),
                ],
                None,
                Decision::Assign("a"),
            ),
            (
                "previous agent wins",
                vec![
                    c("a", Normal, AcceptingChats, 0, 6, 0),
                    c("p", Last, AcceptingChats, 3, 6, 0),
                ],
                Some("p"),
                Decision::Assign("p"),
            ),
            (
                "previous agent full",
                vec![
                    c("a", Normal, AcceptingChats, 0, 6, 0),
                    c("p", Normal, AcceptingChats, 6, 6, 0),
                ],
                Some("p"),
                Decision::Assign("a"),
            ),
            (
                "previous supervisor ignored",
                vec![
                    c("a", Normal, AcceptingChats, 0, 6, 0),
                    c("p", Supervisor, AcceptingChats, 0, 6, 0),
                ],
                Some("p"),
                Decision::Assign("a"),
            ),
            (
                "ties by id",
                vec![
                    c("b", Normal, AcceptingChats, 0, 6, 0),
                    c("a", Normal, AcceptingChats, 0, 6, 0),
                ],
                None,
                Decision::Assign("a"),
            ),
        ];
        for (name, candidates, prev, want) in cases {
            assert_eq!(decide(&candidates, prev), want, "{name}");
        }
    }
}
