//! Tag definitions (Configuration API `create_tag`, `update_tag`,
//! `delete_tag`, `list_tags`): which groups' threads may carry a tag.
//!
//! `tags--all:rw` manages every tag; `tags--groups:rw` only tags whose
//! groups (before and after the change) are all the requester's own, and
//! `tags--groups:ro` lists only tags that share a group with the requester.

use crate::chats::{now_us, rfc3339};
use crate::dispatch::parse;
use crate::error::{err, validation};
use crate::push::Outgoing;
use crate::state::{OrgState, TagDef};
use chatgate_domain::scopes::ScopeSet;
use chatgate_domain::{Agent, GroupId, OrgId};
use chatgate_protocol::{ErrorBody, ErrorType};
use chatgate_store::{Op, TagRecord};
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest tag name.
pub(crate) const MAX_TAG_CHARS: usize = 100;

#[derive(Deserialize)]
struct TagFields {
    name: String,
    group_ids: Option<Vec<GroupId>>,
}

#[derive(Deserialize)]
struct TagName {
    name: String,
}

#[derive(Default, Deserialize)]
struct ListTagsRequest {
    #[serde(default)]
    filters: ListTagsFilters,
}

#[derive(Default, Deserialize)]
struct ListTagsFilters {
    group_ids: Option<Vec<GroupId>>,
}

fn wire(t: &TagDef) -> Value {
    json!({
        "name": t.name,
        "group_ids": t.group_ids,
        "author_id": t.author_id,
        "created_at": rfc3339(t.created_at_us),
    })
}

fn not_found(name: &str) -> ErrorBody {
    err(ErrorType::NotFound, format!("tag `{name}` not found"))
}

/// Whether `me` may manage a tag in these groups.
fn may_manage(me: &Agent, scopes: &ScopeSet, groups: &[GroupId]) -> Result<(), ErrorBody> {
    if scopes.has("tags--all:rw") || groups.iter().all(|g| me.in_group(*g)) {
        return Ok(());
    }
    Err(err(
        ErrorType::Authorization,
        "`tags--groups:rw` manages only tags of the requester's own groups",
    ))
}

/// `list_tags`, sorted by name.
pub(crate) fn list_tags(
    state: &OrgState,
    me: &Agent,
    scopes: &ScopeSet,
    payload: Value,
) -> Result<Value, ErrorBody> {
    let req: ListTagsRequest = parse(payload)?;
    let all = scopes.has("tags--all:ro");
    let list: Vec<Value> = state
        .tags
        .values()
        .filter(|t| all || t.group_ids.iter().any(|g| me.in_group(*g)))
        .filter(|t| {
            req.filters
                .group_ids
                .as_ref()
                .is_none_or(|want| t.group_ids.iter().any(|g| want.contains(g)))
        })
        .map(wire)
        .collect();
    Ok(Value::Array(list))
}

/// `create_tag`, `update_tag`, `delete_tag`: changes `state` and appends
/// the store operation.
pub(crate) fn write_tag(
    state: &mut OrgState,
    org: &OrgId,
    me: &Agent,
    scopes: &ScopeSet,
    action: &str,
    payload: Value,
    (ops, pushes): (&mut Vec<Op>, &mut Vec<Outgoing>),
) -> Result<Value, ErrorBody> {
    // Configuration pushes go to every session of the organization.
    let push = |state: &OrgState, name: &'static str, payload: Value| {
        Outgoing::new(name, payload, state.sessions_where(|_| true), None)
    };
    if action == "delete_tag" {
        let req: TagName = parse(payload)?;
        let tag = state
            .tags
            .get(&req.name)
            .ok_or_else(|| not_found(&req.name))?;
        may_manage(me, scopes, &tag.group_ids)?;
        state.tags.remove(&req.name);
        pushes.push(push(state, "tag_deleted", json!({ "name": req.name })));
        ops.push(Op::DeleteTag {
            org: org.clone(),
            name: req.name,
        });
        return Ok(json!({}));
    }
    let req: TagFields = parse(payload)?;
    let groups = match req.group_ids {
        Some(g) if g.is_empty() => return Err(validation("`group_ids` must not be empty")),
        Some(mut g) => {
            g.sort_unstable();
            g.dedup();
            if let Some(missing) = g.iter().find(|g| !state.groups.contains_key(g)) {
                return Err(err(
                    ErrorType::GroupNotFound,
                    format!("group {missing} not found"),
                ));
            }
            Some(g)
        }
        None => None,
    };
    let tag = if action == "create_tag" {
        let name = req.name.trim();
        if name.is_empty() {
            return Err(validation("`name` must not be empty"));
        }
        if name.chars().count() > MAX_TAG_CHARS {
            return Err(validation(format!(
                "`name` is longer than {MAX_TAG_CHARS} characters"
            )));
        }
        let lower = name.to_lowercase();
        if let Some(t) = state.tags.values().find(|t| t.name.to_lowercase() == lower) {
            return Err(validation(format!("tag `{}` already exists", t.name)));
        }
        let group_ids = groups.unwrap_or_else(|| vec![0]);
        may_manage(me, scopes, &group_ids)?;
        TagDef {
            name: name.to_owned(),
            group_ids,
            author_id: me.id.0.clone(),
            created_at_us: now_us(),
        }
    } else {
        let Some(group_ids) = groups else {
            return Err(validation("`group_ids` is required"));
        };
        let old = state
            .tags
            .get(&req.name)
            .ok_or_else(|| not_found(&req.name))?;
        may_manage(me, scopes, &old.group_ids)?;
        may_manage(me, scopes, &group_ids)?;
        TagDef {
            group_ids,
            ..old.clone()
        }
    };
    ops.push(Op::UpsertTag(TagRecord {
        org: org.clone(),
        name: tag.name.clone(),
        group_ids: serde_json::to_string(&tag.group_ids).expect("serializes"),
        author_id: tag.author_id.clone(),
        created_at_us: tag.created_at_us,
    }));
    let pushed = if action == "create_tag" {
        push(state, "tag_created", wire(&tag))
    } else {
        push(
            state,
            "tag_updated",
            json!({ "name": tag.name, "group_ids": tag.group_ids }),
        )
    };
    pushes.push(pushed);
    state.tags.insert(tag.name.clone(), tag);
    Ok(json!({}))
}

/// Whether a thread of a chat with these access groups may carry `tag`:
/// the tag must be defined and share a group with the chat.
pub(crate) fn check_applicable(
    state: &OrgState,
    tag: &str,
    access: &[GroupId],
) -> Result<(), ErrorBody> {
    let def = state.tags.get(tag).ok_or_else(|| not_found(tag))?;
    if def.group_ids.iter().any(|g| access.contains(g)) {
        Ok(())
    } else {
        Err(validation(format!(
            "tag `{tag}` is not defined for any of the chat's groups"
        )))
    }
}
