//! Opaque `page_id`s for the list methods (the reference's §5).
//!
//! A page id is `base64url(json) "." base64url(hmac)`: the JSON freezes the
//! organization, the requester, the method, the filters, the sort order,
//! the limit, the moment the listing started (`as_of`) and the boundary item
//! of the page it came from; the HMAC-SHA256 under a key drawn at start makes
//! it unforgeable. Paging is by key (the sort key and id of the boundary
//! item), not by offset, so items arriving while a client pages never shift
//! the pages; items created after `as_of` are left out of later pages.
//! Page ids do not survive a restart (the key is per process).

use crate::error::validation;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chatgate_protocol::ErrorBody;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// A listed item's position: its sort time and its id.
pub(crate) type SortKey = (i64, String);

/// What a page id carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub org: String,
    pub who: String,
    pub method: String,
    pub filters: Value,
    pub asc: bool,
    pub limit: u32,
    pub as_of: i64,
    /// The boundary item: the last of the page for a next page, the first
    /// for a previous page.
    pub key: SortKey,
    /// `true`: the items after `key`; `false`: the items before it.
    pub forward: bool,
}

fn mac(key: &[u8; 32], data: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m
}

/// Encodes and signs a cursor.
pub(crate) fn encode(key: &[u8; 32], c: &Cursor) -> String {
    let json = serde_json::to_vec(c).expect("serializes");
    let tag = mac(key, &json).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Checks and decodes a page id issued to this requester for this method.
pub(crate) fn decode(
    key: &[u8; 32],
    page_id: &str,
    org: &str,
    who: &str,
    method: &str,
) -> Result<Cursor, ErrorBody> {
    let invalid = || validation("`page_id` is invalid or has expired");
    let (body, tag) = page_id.split_once('.').ok_or_else(invalid)?;
    let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    mac(key, &json).verify_slice(&tag).map_err(|_| invalid())?;
    let c: Cursor = serde_json::from_slice(&json).map_err(|_| invalid())?;
    if c.org != org || c.who != who || c.method != method {
        return Err(invalid());
    }
    Ok(c)
}

/// What a list request says about paging.
#[derive(Default)]
pub(crate) struct ListRequest<'a> {
    pub page_id: Option<&'a str>,
    pub sort_order: Option<&'a str>,
    pub limit: Option<u32>,
    /// What the page id freezes besides order and limit: the request's
    /// `filters` (and, for `list_threads`, its `chat_id`).
    pub filters: Option<Value>,
    /// How refusals name `filters` (default "`filters`").
    pub filters_name: Option<&'static str>,
}

/// How a request pages.
pub(crate) struct Paging {
    pub asc: bool,
    pub limit: u32,
    pub as_of: i64,
    pub filters: Value,
    pub boundary: Option<(SortKey, bool)>,
}

impl Paging {
    /// From a request: a page id freezes everything; otherwise the
    /// request's own `sort_order`, `limit` (default `default_limit`, at most
    /// `max`) and `filters`. With a page id, `filters` other than the frozen
    /// ones (or a `sort_order`) are `validation`; `limit` may change.
    pub(crate) fn from_request(
        key: &[u8; 32],
        ids: (&str, &str, &str),
        req: ListRequest<'_>,
        (default_limit, max): (u32, u32),
        now: i64,
    ) -> Result<Paging, ErrorBody> {
        let ListRequest {
            page_id,
            sort_order,
            limit,
            filters,
            filters_name,
        } = req;
        if let Some(l) = limit
            && (l == 0 || l > max)
        {
            return Err(validation(format!("`limit` must be 1-{max}")));
        }
        if let Some(page_id) = page_id {
            let c = decode(key, page_id, ids.0, ids.1, ids.2)?;
            if let Some(f) = filters
                && f != c.filters
            {
                return Err(validation(format!(
                    "{} cannot change while paging: frozen in `page_id`",
                    filters_name.unwrap_or("`filters`")
                )));
            }
            if sort_order.is_some() {
                return Err(validation(
                    "`sort_order` cannot be given with `page_id`: it is frozen in it",
                ));
            }
            return Ok(Paging {
                asc: c.asc,
                limit: limit.unwrap_or(c.limit),
                as_of: c.as_of,
                filters: c.filters,
                boundary: Some((c.key, c.forward)),
            });
        }
        let asc = match sort_order {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => {
                return Err(validation(format!(
                    "`sort_order` must be asc or desc, not `{other}`"
                )));
            }
        };
        Ok(Paging {
            asc,
            limit: limit.unwrap_or(default_limit),
            as_of: now,
            filters: filters.unwrap_or(Value::Null),
            boundary: None,
        })
    }

    /// Sorts `items` in listing order, leaves out those created after
    /// `as_of` (by `created`), cuts the page, and signs the neighbouring
    /// page ids. Returns (page, total, next_page_id, previous_page_id).
    pub(crate) fn page<T>(
        &self,
        key: &[u8; 32],
        ids: (&str, &str, &str),
        mut items: Vec<(SortKey, i64, T)>,
    ) -> (Vec<T>, usize, Option<String>, Option<String>) {
        items.retain(|(_, created, _)| *created <= self.as_of);
        items.sort_by(|a, b| a.0.cmp(&b.0));
        if !self.asc {
            items.reverse();
        }
        let total = items.len();
        let limit = self.limit as usize;
        // `a` comes before `b` in listing order.
        let before = |a: &SortKey, b: &SortKey| if self.asc { a < b } else { a > b };
        let (start, end) = match &self.boundary {
            None => (0, limit.min(total)),
            Some((k, true)) => {
                let s = items
                    .iter()
                    .position(|(x, _, _)| before(k, x))
                    .unwrap_or(total);
                (s, (s + limit).min(total))
            }
            Some((k, false)) => {
                let e = items
                    .iter()
                    .position(|(x, _, _)| !before(x, k))
                    .unwrap_or(total);
                (e.saturating_sub(limit), e)
            }
        };
        let cursor = |k: &SortKey, forward: bool| {
            encode(
                key,
                &Cursor {
                    org: ids.0.to_owned(),
                    who: ids.1.to_owned(),
                    method: ids.2.to_owned(),
                    filters: self.filters.clone(),
                    asc: self.asc,
                    limit: self.limit,
                    as_of: self.as_of,
                    key: k.clone(),
                    forward,
                },
            )
        };
        let next = (end < total && end > start).then(|| cursor(&items[end - 1].0, true));
        let prev = (start > 0 && start < total).then(|| cursor(&items[start].0, false));
        let page = items.drain(..end).skip(start).map(|(_, _, t)| t).collect();
        (page, total, next, prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: [u8; 32] = [7; 32];
    const IDS: (&str, &str, &str) = ("acme", "alice", "list_chats");

    fn items(n: i64) -> Vec<(SortKey, i64, i64)> {
        (1..=n)
            .map(|i| ((i * 10, format!("c{i}")), i * 10, i))
            .collect()
    }

    fn paging(page_id: Option<&str>, sort: Option<&str>, limit: Option<u32>) -> Paging {
        let req = ListRequest {
            page_id,
            sort_order: sort,
            limit,
            ..Default::default()
        };
        Paging::from_request(&KEY, IDS, req, (10, 100), 1_000).unwrap()
    }

    #[test]
    fn forwards_and_backwards_in_both_orders() {
        for (sort, want) in [
            (Some("asc"), vec![1, 2, 3, 4, 5, 6, 7]),
            (None, vec![7, 6, 5, 4, 3, 2, 1]),
        ] {
            let p = paging(None, sort, Some(3));
            let (p1, total, next, prev) = p.page(&KEY, IDS, items(7));
            assert_eq!((p1.as_slice(), total, prev), (&want[0..3], 7, None));
            let (p2, _, next, prev) = paging(next.as_deref(), None, None).page(&KEY, IDS, items(7));
            assert_eq!(p2, want[3..6]);
            let (p3, _, none, _) = paging(next.as_deref(), None, None).page(&KEY, IDS, items(7));
            assert_eq!((p3.as_slice(), none), (&want[6..], None));
            let (back, _, _, first) = paging(prev.as_deref(), None, None).page(&KEY, IDS, items(7));
            assert_eq!((back.as_slice(), first), (&want[0..3], None));
        }
    }

    #[test]
    fn items_arriving_while_paging_do_not_shift_pages() {
        // The listing starts at time 40, when items 1-4 exist.
        let req = ListRequest {
            sort_order: Some("asc"),
            limit: Some(2),
            ..Default::default()
        };
        let p = Paging::from_request(&KEY, IDS, req, (10, 100), 40).unwrap();
        let (_, _, next, _) = p.page(&KEY, IDS, items(4));
        // Two newer items arrive (created after as_of) plus one older one
        // that sorts into the first page's range.
        let mut more = items(6);
        more.push(((5, "c0".into()), 5, 0));
        let (p2, total, _, _) = paging(next.as_deref(), None, None).page(&KEY, IDS, more);
        assert_eq!(p2, vec![3, 4]);
        assert_eq!(total, 5, "created after as_of: left out");
    }

    #[test]
    fn page_ids_are_bound_and_unforgeable() {
        let (_, _, next, _) = paging(None, None, Some(1)).page(&KEY, IDS, items(3));
        let next = next.unwrap();
        assert!(decode(&KEY, &next, "acme", "alice", "list_chats").is_ok());
        assert!(decode(&KEY, &next, "globex", "alice", "list_chats").is_err());
        assert!(decode(&KEY, &next, "acme", "bob", "list_chats").is_err());
        assert!(decode(&KEY, &next, "acme", "alice", "list_threads").is_err());
        assert!(decode(&[8; 32], &next, "acme", "alice", "list_chats").is_err());
        // Edit the JSON (another organization) and keep the old signature.
        let (body, tag) = next.split_once('.').unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(json.replace("acme", "globex"));
        assert!(
            decode(
                &KEY,
                &format!("{forged}.{tag}"),
                "globex",
                "alice",
                "list_chats"
            )
            .is_err()
        );
        assert!(decode(&KEY, "garbage", "acme", "alice", "list_chats").is_err());
    }

    #[test]
    fn filters_are_frozen() {
        let with = |page_id: Option<&str>, sort_order, limit, group: Option<u32>| {
            let req = ListRequest {
                page_id,
                sort_order,
                limit,
                filters: group.map(|g| json!({"group_ids": [g]})),
                filters_name: None,
            };
            Paging::from_request(&KEY, IDS, req, (10, 100), 1_000)
        };
        let p = with(None, None, Some(1), Some(0)).unwrap();
        let (_, _, next, _) = p.page(&KEY, IDS, items(3));
        let next = next.unwrap();
        let same = with(Some(&next), None, None, Some(0));
        assert_eq!(same.unwrap().filters, json!({"group_ids": [0]}));
        let other = with(Some(&next), None, None, Some(1)).err().unwrap();
        assert!(
            other.message.starts_with("`filters` cannot change"),
            "{other:?}"
        );
        assert!(with(Some(&next), Some("asc"), None, None).is_err());
        assert!(with(None, None, Some(101), None).is_err());
        assert!(with(None, None, Some(0), None).is_err());
    }
}
