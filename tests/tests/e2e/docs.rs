//! proto-docs cannot drift: every tagged JSON example parses through the
//! protocol types and serializes back to the same JSON, and the error and
//! disconnect-reason tables match the code.

use chatgate_protocol::chats::*;
use chatgate_protocol::methods::*;
use chatgate_protocol::pushes::{AgentDisconnected, RoutingStatusSet};
use chatgate_protocol::{DisconnectReason, ErrorEnvelope, ErrorType, RequestFrame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto-docs")
}

fn docs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(docs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    out.sort();
    assert!(out.len() >= 6, "proto-docs has its documents");
    out
}

/// `(file, info string, body)` of every fenced block whose language is json.
fn json_blocks() -> Vec<(String, String, String)> {
    let mut blocks = Vec::new();
    for (file, text) in docs() {
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if let Some(info) = line.trim_start().strip_prefix("```json") {
                let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
                blocks.push((file.clone(), info.trim().to_owned(), body.join("\n")));
            }
        }
    }
    blocks
}

/// Parses `v` as `T` and checks it serializes back to exactly `v`.
fn typed<T: DeserializeOwned + Serialize>(what: &str, v: &Value) {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{v:#}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, v,
        "{what}: the example has fields the type does not keep"
    );
}

fn empty_object(what: &str, v: &Value) {
    assert_eq!(v, &serde_json::json!({}), "{what}");
}

fn request_payload(action: &str, p: &Value) {
    match action {
        "login" => typed::<LoginRequest>(action, p),
        "set_routing_status" => typed::<SetRoutingStatusRequest>(action, p),
        "list_routing_statuses" => typed::<ListRoutingStatusesRequest>(action, p),
        "set_away_status" => typed::<SetAwayStatusRequest>(action, p),
        "logout" | "ping" => empty_object(action, p),
        "start_chat" | "resume_chat" => typed::<StartChatRequest>(action, p),
        "send_event" => typed::<SendEventRequest>(action, p),
        "deactivate_chat" => typed::<DeactivateChatRequest>(action, p),
        "transfer_chat" => typed::<TransferChatRequest>(action, p),
        "tag_thread" | "untag_thread" => typed::<ThreadTag>(action, p),
        "list_archives" => typed::<ListArchivesRequest>(action, p),
        "update_chat_properties" | "update_thread_properties" | "update_event_properties" => {
            typed::<PropertiesRequest<chatgate_protocol::data::Properties>>(action, p)
        }
        "delete_chat_properties" | "delete_thread_properties" | "delete_event_properties" => {
            typed::<PropertiesRequest<PropertyNames>>(action, p)
        }
        other => panic!("the docs test has no request type for `{other}`: add it"),
    }
}

fn response_payload(action: &str, p: &Value) {
    match action {
        "login" => typed::<LoginResponse>(action, p),
        "list_routing_statuses" => typed::<Vec<RoutingStatusEntry>>(action, p),
        "set_routing_status" | "set_away_status" | "logout" | "ping" => empty_object(action, p),
        "start_chat" | "resume_chat" => typed::<StartChatResponse>(action, p),
        "send_event" => typed::<SendEventResponse>(action, p),
        "list_archives" => typed::<ListArchivesResponse>(action, p),
        a if a.ends_with("_properties") => empty_object(action, p),
        other => panic!("the docs test has no response type for `{other}`: add it"),
    }
}

fn push_payload(action: &str, p: &Value) {
    match action {
        "routing_status_set" => typed::<RoutingStatusSet>(action, p),
        "agent_disconnected" => typed::<AgentDisconnected>(action, p),
        "incoming_chat" => typed::<IncomingChat>(action, p),
        "incoming_event" => typed::<IncomingEvent>(action, p),
        "chat_deactivated" => typed::<ChatDeactivated>(action, p),
        "chat_transferred" => typed::<ChatTransferred>(action, p),
        "chat_access_updated" => typed::<ChatAccessUpdated>(action, p),
        "queue_positions_updated" => typed::<Vec<QueuePositionEntry>>(action, p),
        "queue_position_updated" => typed::<QueuePositionEntry>(action, p),
        "thread_tagged" | "thread_untagged" => typed::<ThreadTag>(action, p),
        a if a.ends_with("_properties_updated") => {
            typed::<PropertiesPush<chatgate_protocol::data::Properties>>(action, p)
        }
        a if a.ends_with("_properties_deleted") => {
            typed::<PropertiesPush<PropertyNames>>(action, p)
        }
        other => panic!("the docs test has no push type for `{other}`: add it"),
    }
}

#[test]
fn every_tagged_example_parses_through_the_protocol_types() {
    let blocks = json_blocks();
    let mut checked = 0;
    for (file, kind, body) in blocks {
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{file}: invalid JSON ({e}):\n{body}"));
        let what = format!("{file} `json {kind}`");
        match kind.as_str() {
            "request" => {
                let frame: RequestFrame =
                    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    chatgate_protocol::methods::agent_method(&frame.action).is_some()
                        || chatgate_protocol::methods::customer_method(&frame.action).is_some(),
                    "{what}: unknown action"
                );
                request_payload(
                    &frame.action,
                    frame.payload.as_ref().unwrap_or(&serde_json::json!({})),
                );
            }
            "response" => {
                assert_eq!(v["type"], "response", "{what}");
                let action = v["action"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: no action"));
                if v["success"] == true {
                    response_payload(action, &v["payload"]);
                } else {
                    assert_eq!(v["success"], false, "{what}");
                    typed::<ErrorEnvelope>(&what, &v["payload"]);
                }
            }
            "push" => {
                assert_eq!(v["type"], "push", "{what}");
                assert!(
                    matches!(v["version"].as_str(), Some("3.5" | "3.6")),
                    "{what}"
                );
                push_payload(v["action"].as_str().unwrap(), &v["payload"]);
            }
            "error" => typed::<ErrorEnvelope>(&what, &v),
            "" => {}
            other => panic!("{what}: unknown example kind `{other}`"),
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} examples found");
}

/// Rows of a markdown table whose first cell is a `code` name.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn error_table_matches_the_code() {
    let text = std::fs::read_to_string(docs_dir().join("errors.md")).unwrap();
    let section = text.split("## Types and HTTP statuses").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let documented: Vec<(String, u16)> = table_rows(section)
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    let code: Vec<(String, u16)> = ErrorType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), t.http_status()))
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn disconnect_reason_table_matches_the_code() {
    let text = std::fs::read_to_string(docs_dir().join("status.md")).unwrap();
    let section = text.split("## Push `agent_disconnected`").nth(1).unwrap();
    let documented: Vec<(String, bool)> = table_rows(section)
        .into_iter()
        .map(|r| (r[0].clone(), r[1] == "reconnect"))
        .collect();
    let code: Vec<(String, bool)> = DisconnectReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), r.should_reconnect()))
        .collect();
    assert_eq!(documented, code);
}
