//! `upload_file` (Agent and Customer Web API): files stored durably by the
//! gateway and served back at the returned URL.
//!
//! An upload is temporary: unless a `file` event uses its URL within
//! [`UPLOAD_TTL_US`] it is deleted by [`Engine::sweep_uploads`]. A `file`
//! event that names it (agent or customer `send_event`, or the initial
//! events of `start_chat` / `resume_chat`) makes it permanent in the same
//! commit as the event, and fills the event's `name`, `content_type` and
//! `size` when the sender left them out.
//!
//! The bytes are written and synced through the store before the upload's
//! metadata is committed, so a URL that was answered always has its bytes.

use crate::chats::now_us;
use crate::dispatch::{Request, Requester};
use crate::error::{err, internal, validation};
use crate::push::{commit, reserve};
use crate::state::{Org, OrgState};
use crate::{Engine, Side};
use chatgate_protocol::data::Event;
use chatgate_protocol::{ErrorBody, ErrorType, Version};
use chatgate_store::{Op, UploadRecord};
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest upload (the vendor's 10 MB).
pub const MAX_UPLOAD: usize = 10 * 1024 * 1024;
/// How long an upload no `file` event uses is kept: 24 hours.
pub const UPLOAD_TTL_US: i64 = 24 * 3600 * 1_000_000;
/// Longest stored file name.
const MAX_NAME_CHARS: usize = 255;
/// The path prefix uploads are served under.
pub const FILES_PREFIX: &str = "/files/";

/// An uploaded file as the transport received it.
#[derive(Clone, Debug)]
pub struct UploadedFile {
    /// The part's file name (as the client sent it).
    pub name: Option<String>,
    /// The part's content type.
    pub content_type: Option<String>,
    pub bytes: bytes::Bytes,
}

/// A stored upload, hot.
#[derive(Clone, Debug)]
pub(crate) struct UploadMeta {
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub created_at_us: i64,
    pub permanent: bool,
}

/// A file served back: its type, name and bytes.
#[derive(Clone, Debug)]
pub struct ServedFile {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Extensions of programs and scripts, refused whatever their bytes say.
const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "exe", "com", "bat", "cmd", "msi", "msp", "scr", "pif", "cpl", "dll", "sys", "drv", "ocx",
    "vbs", "vbe", "js", "jse", "wsf", "wsh", "ps1", "psm1", "sh", "bash", "csh", "ksh", "zsh",
    "command", "app", "apk", "jar", "deb", "rpm", "run", "bin", "elf", "so", "dylib", "hta", "reg",
    "lnk", "inf", "gadget", "appimage",
];

/// Whether the file is a program: by extension or by magic bytes (PE / DOS
/// `MZ`, ELF, Mach-O, Java class, shebang scripts).
pub(crate) fn is_executable(name: &str, bytes: &[u8]) -> bool {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if EXECUTABLE_EXTENSIONS.contains(&ext.as_str()) {
        return true;
    }
    const MAGIC: &[&[u8]] = &[
        b"MZ",
        b"\x7fELF",
        b"\xfe\xed\xfa\xce",
        b"\xfe\xed\xfa\xcf",
        b"\xce\xfa\xed\xfe",
        b"\xcf\xfa\xed\xfe",
        b"\xca\xfe\xba\xbe",
        b"#!",
    ];
    MAGIC.iter().any(|m| bytes.starts_with(m))
}

/// A file name safe to store and to put in a URL path segment: the last
/// path component, control characters dropped, at most 255 characters.
fn clean_name(name: Option<&str>) -> String {
    let base = name
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect::<String>();
    let base = base.trim().trim_matches('.').to_owned();
    if base.is_empty() { "file".into() } else { base }
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path an upload is served at.
pub fn upload_path(org: &str, id: &str, name: &str) -> String {
    format!(
        "{FILES_PREFIX}{}/{id}/{}",
        encode_segment(org),
        encode_segment(name)
    )
}

/// The upload a URL names, if it is one of ours: `(organization, id)`.
fn parse_upload_url(url: &str) -> Option<(String, String)> {
    let at = url.find(FILES_PREFIX)?;
    let mut parts = url[at + FILES_PREFIX.len()..].split('/');
    let org = percent_decode(parts.next()?)?;
    let id = parts.next()?.to_owned();
    Some((org, id))
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A `file` event that names one of this organization's uploads: the
/// upload becomes permanent (the returned op, committed with the event) and
/// the event gets the upload's name, type and size where it has none. A
/// URL of ours that names no upload is `validation` (it expired or never
/// existed); other URLs are left alone.
pub(crate) fn adopt(
    state: &mut OrgState,
    org: &str,
    event: &mut Event,
) -> Result<Option<Op>, ErrorBody> {
    adopt_in(&mut state.uploads, org, event)
}

/// [`adopt`] on the uploads map alone (while a chat is borrowed).
pub(crate) fn adopt_in(
    uploads: &mut std::collections::HashMap<String, UploadMeta>,
    org: &str,
    event: &mut Event,
) -> Result<Option<Op>, ErrorBody> {
    let Event::File {
        url,
        name,
        content_type,
        size,
        ..
    } = event
    else {
        return Ok(None);
    };
    let Some((url_org, id)) = parse_upload_url(url) else {
        return Ok(None);
    };
    let meta = (url_org == org)
        .then(|| uploads.get_mut(&id))
        .flatten()
        .ok_or_else(|| {
            validation("the file `url` names no upload of this organization (expired?)")
        })?;
    name.get_or_insert_with(|| meta.name.clone());
    content_type.get_or_insert_with(|| meta.content_type.clone());
    size.get_or_insert(meta.size);
    if meta.permanent {
        return Ok(None);
    }
    meta.permanent = true;
    Ok(Some(Op::SetUploadPermanent {
        org: chatgate_domain::OrgId(org.to_owned()),
        id,
    }))
}

impl Engine {
    /// `upload_file` for an agent, bot or customer on the Web API. Returns
    /// the path the file is served at (the transport makes it a URL).
    pub async fn upload_file(
        &self,
        requester: Requester,
        version: Version,
        file: UploadedFile,
    ) -> Result<String, ErrorBody> {
        let req = Request {
            requester,
            version,
            action: "upload_file".into(),
            payload: Value::Null,
            request_id: None,
            author_id: None,
        };
        let org: Arc<Org> = match req.requester.side() {
            Side::Agent => self.authenticate_agent(&req)?,
            Side::Customer => self.authenticate_customer(&req)?,
        };
        if file.bytes.len() > MAX_UPLOAD {
            return Err(too_large());
        }
        if file.bytes.is_empty() {
            return Err(validation("the file is empty"));
        }
        let name = clean_name(file.name.as_deref());
        if is_executable(&name, &file.bytes) {
            return Err(validation("executable files are not accepted"));
        }
        let content_type = file
            .content_type
            .filter(|t| !t.is_empty() && t.len() <= 255 && t.is_ascii())
            .unwrap_or_else(|| "application/octet-stream".into());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let store = self.inner.store.clone();
        let (write_id, bytes) = (id.clone(), file.bytes.clone());
        tokio::task::spawn_blocking(move || store.put_file(&write_id, &bytes))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let now = now_us();
        let meta = UploadMeta {
            name: name.clone(),
            content_type: content_type.clone(),
            size: file.bytes.len() as u64,
            created_at_us: now,
            permanent: false,
        };
        let reservation = reserve(&self.inner.store)?;
        let pending = {
            let mut state = org.lock();
            state.uploads.insert(id.clone(), meta);
            commit(
                reservation,
                vec![Op::PutUpload(UploadRecord {
                    org: org.org.id.clone(),
                    id: id.clone(),
                    name: name.clone(),
                    content_type,
                    size: file.bytes.len() as u64,
                    created_at_us: now,
                    permanent: false,
                })],
                Vec::new(),
            )
        };
        pending.wait().await?;
        Ok(upload_path(&org.org.id.0, &id, &name))
    }

    /// The file at `/files/<organization>/<id>/...`, if it exists.
    pub async fn served_file(&self, org: &str, id: &str) -> Result<Option<ServedFile>, ErrorBody> {
        let Some(org) = self.org(org) else {
            return Ok(None);
        };
        let Some(meta) = org.lock().uploads.get(id).cloned() else {
            return Ok(None);
        };
        let store = self.inner.store.clone();
        let id = id.to_owned();
        let bytes = tokio::task::spawn_blocking(move || store.read_file(&id))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(bytes.map(|bytes| ServedFile {
            name: meta.name,
            content_type: meta.content_type,
            bytes,
        }))
    }

    /// Deletes every temporary upload created before `now_us` minus
    /// [`UPLOAD_TTL_US`]: its metadata in one commit per organization, then
    /// its bytes. Returns how many were deleted. The server calls this
    /// periodically; tests call it with the clock they want.
    pub async fn sweep_uploads(&self, now_us: i64) -> Result<usize, ErrorBody> {
        let cutoff = now_us - UPLOAD_TTL_US;
        let orgs: Vec<Arc<Org>> = self.inner.orgs.iter().map(|o| o.value().clone()).collect();
        let mut deleted = Vec::new();
        for org in orgs {
            let reservation = reserve(&self.inner.store)?;
            let (pending, ids) = {
                let mut state = org.lock();
                let expired: Vec<String> = state
                    .uploads
                    .iter()
                    .filter(|(_, u)| !u.permanent && u.created_at_us < cutoff)
                    .map(|(id, _)| id.clone())
                    .collect();
                if expired.is_empty() {
                    continue;
                }
                for id in &expired {
                    state.uploads.remove(id);
                }
                let ops = expired
                    .iter()
                    .map(|id| Op::DeleteUpload {
                        org: org.org.id.clone(),
                        id: id.clone(),
                    })
                    .collect();
                (commit(reservation, ops, Vec::new()), expired)
            };
            pending.wait().await?;
            deleted.extend(ids);
        }
        let n = deleted.len();
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || {
            for id in deleted {
                if let Err(e) = store.delete_file(&id) {
                    tracing::warn!(error = %e, file = %id, "could not delete an expired upload");
                }
            }
        })
        .await
        .map_err(internal)?;
        Ok(n)
    }
}

fn too_large() -> ErrorBody {
    err(ErrorType::EntityTooLarge, "Upload limit exceeded (10MB).")
}

/// The `upload_file` response body for a URL.
pub fn upload_response(url: &str) -> Value {
    json!({ "url": url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_recognized_by_name_and_by_bytes() {
        assert!(is_executable("setup.EXE", b"whatever"));
        assert!(is_executable("run.sh", b"echo"));
        assert!(is_executable("photo.png", b"MZ\x90\x00"));
        assert!(is_executable("notes.txt", b"\x7fELF\x02"));
        assert!(is_executable("notes", b"#!/bin/sh\n"));
        assert!(!is_executable("photo.png", b"\x89PNG\r\n"));
        assert!(!is_executable("report.pdf", b"%PDF-1.7"));
    }

    #[test]
    fn names_are_cleaned_and_urls_round_trip() {
        assert_eq!(clean_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_name(Some("C:\\Users\\me\\cv.pdf")), "cv.pdf");
        assert_eq!(clean_name(Some("  ")), "file");
        assert_eq!(clean_name(None), "file");
        assert_eq!(clean_name(Some("a\u{0}b.txt")), "ab.txt");
        let path = upload_path("my org", "abc123", "résumé 1.pdf");
        assert_eq!(path, "/files/my%20org/abc123/r%C3%A9sum%C3%A9%201.pdf");
        let url = format!("https://chat.example.com{path}");
        assert_eq!(
            parse_upload_url(&url),
            Some(("my org".to_owned(), "abc123".to_owned()))
        );
        assert_eq!(parse_upload_url("https://cdn.example.com/x.png"), None);
    }
}
