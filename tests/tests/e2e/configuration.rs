//! The Configuration API: agents, groups and bots with role checks, the
//! configuration pushes, changes that take effect at once for routing and
//! live sessions, bot tokens and their revocation.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

const OWNER: Option<&str> = Some("Bearer alice-pat-1");
const ADMIN: Option<&str> = Some("Bearer carol-pat-1");
const NORMAL: Option<&str> = Some("Bearer bob-pat-1");

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn agents_roles_and_live_effects() {
    let s = TestServer::start().await;
    let mut bob = s.login("bob-pat-1").await;
    let mut carol = s.login("carol-pat-1").await;
    // Everyone reads; only owners and administrators write.
    let (code, list) = s.config("list_agents", NORMAL, json!({})).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        ids(&list),
        vec![
            "alice@acme.test",
            "bob@acme.test",
            "carol@acme.test",
            "dave@acme.test"
        ]
    );
    let (code, body) = s
        .config(
            "create_agent",
            NORMAL,
            json!({"id": "frank@acme.test", "name": "Frank"}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("authorization"))
    );
    let (code, body) = s
        .config(
            "create_agent",
            ADMIN,
            json!({"id": "frank@acme.test", "name": "Frank", "role": "administrator"}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("authorization")),
        "only the owner creates administrators"
    );
    let (code, body) = s
        .config("create_agent", ADMIN, json!({"id": "frank@acme.test", "name": "Frank", "groups": [{"id": 1, "priority": "normal"}], "max_chats_count": 3}))
        .await;
    assert_eq!((code, body), (200, json!({"id": "frank@acme.test"})));
    let p = bob.push("agent_created").await;
    assert_eq!(p["payload"]["id"], "frank@acme.test");
    assert_eq!(
        p["payload"]["groups"],
        json!([{"id": 1, "priority": "normal"}])
    );
    let (code, body) = s
        .config(
            "create_agent",
            OWNER,
            json!({"id": "frank@acme.test", "name": "Frank"}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (409, Some("already_exists"))
    );
    for bad in [
        json!({"id": "nomail", "name": "X"}),
        json!({"id": "x@acme.test"}),
        json!({"id": "x@acme.test", "name": "X", "groups": [{"id": 99}]}),
        json!({"id": "x@acme.test", "name": "X", "max_chats_count": 21}),
        json!({"id": "x@acme.test", "name": "X", "login_status": "sleeping"}),
    ] {
        let (code, body) = s.config("create_agent", OWNER, bad.clone()).await;
        assert!(code == 400 || code == 404, "{bad}: {code} {body}");
    }
    let (code, agent) = s
        .config("get_agent", NORMAL, json!({"id": "frank@acme.test"}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        (
            agent["max_chats_count"].as_u64(),
            agent["login_status"].as_str()
        ),
        (Some(3), Some("accepting chats"))
    );
    let (_, list) = s
        .config(
            "list_agents",
            NORMAL,
            json!({"filters": {"group_ids": [1]}}),
        )
        .await;
    assert_eq!(
        ids(&list),
        vec!["alice@acme.test", "carol@acme.test", "frank@acme.test"]
    );
    let (code, _) = s
        .config("get_agent", NORMAL, json!({"id": "eve@globex.test"}))
        .await;
    assert_eq!(code, 404, "another organization's agent does not exist");

    // Suspension cuts the agent off at once; the owner cannot be suspended.
    let (code, _) = s
        .config("suspend_agent", ADMIN, json!({"id": "alice@acme.test"}))
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .config("suspend_agent", ADMIN, json!({"id": "bob@acme.test"}))
        .await;
    assert_eq!(code, 200);
    let d = bob.disconnected().await;
    assert_eq!(d["payload"]["reason"], "agent_disconnected_by_server");
    assert_eq!(d["payload"]["data"]["detail"], "agent_suspended");
    carol.push("agent_suspended").await;
    let (code, body) = s.web("list_routing_statuses", NORMAL, json!({})).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("requester_suspended"))
    );
    let (code, _) = s
        .config("unsuspend_agent", ADMIN, json!({"id": "bob@acme.test"}))
        .await;
    assert_eq!(code, 200);
    let (code, _) = s.web("list_routing_statuses", NORMAL, json!({})).await;
    assert_eq!(code, 200);

    // A role change ends the agent's sessions so it logs in with the new role.
    let (code, _) = s
        .config(
            "create_agent",
            OWNER,
            json!({"id": "gina@acme.test", "name": "Gina", "role": "administrator"}),
        )
        .await;
    assert_eq!(code, 200, "the owner creates administrators");
    let (code, body) = s
        .config(
            "update_agent",
            ADMIN,
            json!({"id": "gina@acme.test", "role": "normal"}),
        )
        .await;
    assert_eq!(
        code, 403,
        "administrators cannot change other administrators: {body}"
    );
    let (code, _) = s
        .config(
            "update_agent",
            OWNER,
            json!({"id": "carol@acme.test", "role": "normal"}),
        )
        .await;
    assert_eq!(code, 200);
    let d = carol.disconnected().await;
    assert_eq!(d["payload"]["reason"], "role_permissions_changed");
    let (code, _) = s
        .config(
            "create_agent",
            ADMIN,
            json!({"id": "y@acme.test", "name": "Y"}),
        )
        .await;
    assert_eq!(code, 403, "carol is normal now");
    // Anyone may update their own profile, not their own limits.
    let (code, _) = s
        .config(
            "update_agent",
            NORMAL,
            json!({"id": "bob@acme.test", "name": "Robert"}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .config(
            "update_agent",
            NORMAL,
            json!({"id": "bob@acme.test", "max_chats_count": 20}),
        )
        .await;
    assert_eq!(code, 403);

    // Deletion revokes the agent's credentials at once.
    let mut alice = s.login("alice-pat-1").await;
    let (code, _) = s
        .config("delete_agent", OWNER, json!({"id": "bob@acme.test"}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        alice.push("agent_deleted").await["payload"],
        json!({"id": "bob@acme.test"})
    );
    let (code, _) = s.web("list_routing_statuses", NORMAL, json!({})).await;
    assert_eq!(code, 401);
    let (code, _) = s
        .config("delete_agent", OWNER, json!({"id": "alice@acme.test"}))
        .await;
    assert_eq!(code, 403, "the owner cannot be deleted");
    // And it all survives a restart.
    drop(alice);
    let s = s.restart().await;
    let (_, list) = s.config("list_agents", OWNER, json!({})).await;
    assert_eq!(
        ids(&list),
        vec![
            "alice@acme.test",
            "carol@acme.test",
            "dave@acme.test",
            "frank@acme.test",
            "gina@acme.test"
        ]
    );
    let (_, carol) = s
        .config("get_agent", OWNER, json!({"id": "carol@acme.test"}))
        .await;
    assert_eq!(carol["role"], "normal");
    let (code, _) = s.web("list_routing_statuses", NORMAL, json!({})).await;
    assert_eq!(code, 401, "a deleted agent's token stays revoked");
}

#[tokio::test]
async fn groups_change_routing_at_once() {
    let s = TestServer::start().await;
    let mut bob = s.login("bob-pat-1").await;
    let (code, body) = s
        .config(
            "create_group",
            ADMIN,
            json!({"name": "VIP", "agent_priorities": {"bob@acme.test": "normal"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let vip = body["id"].as_u64().unwrap();
    assert_eq!(vip, 2);
    let p = bob.push("group_created").await;
    assert_eq!(
        p["payload"]["agent_priorities"],
        json!({"bob@acme.test": "normal"})
    );
    // The new group routes immediately.
    let (mut cust, _) = s.customer("acme").await;
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"access": {"group_ids": [vip]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = bob.push("incoming_chat").await;
    assert_eq!(p["payload"]["chat"]["access"], json!({"group_ids": [vip]}));
    let (code, group) = s.config("get_group", NORMAL, json!({"id": vip})).await;
    assert_eq!(
        (code, group["routing_status"].as_str()),
        (200, Some("accepting_chats"))
    );
    let (code, body) = s
        .config(
            "update_group",
            ADMIN,
            json!({"id": vip, "agent_priorities": {"alice@acme.test": "last"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    bob.push("group_updated").await;
    let (_, agent) = s
        .config("get_agent", NORMAL, json!({"id": "bob@acme.test"}))
        .await;
    assert_eq!(
        agent["groups"],
        json!([{"id": 0, "priority": "normal"}]),
        "bob left VIP"
    );
    let (code, _) = s
        .config("create_group", ADMIN, json!({"name": "No priorities"}))
        .await;
    assert_eq!(code, 400);
    let (code, _) = s
        .config(
            "create_group",
            ADMIN,
            json!({"name": "X", "agent_priorities": {"ghost@acme.test": "normal"}}),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = s.config("delete_group", ADMIN, json!({"id": 0})).await;
    assert_eq!(code, 400);
    let (code, _) = s.config("delete_group", NORMAL, json!({"id": vip})).await;
    assert_eq!(code, 403);
    let (code, _) = s.config("delete_group", ADMIN, json!({"id": vip})).await;
    assert_eq!(code, 200);
    assert_eq!(
        bob.push("group_deleted").await["payload"],
        json!({"id": vip})
    );
    let (code, body) = s.config("get_group", NORMAL, json!({"id": vip})).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (404, Some("group_not_found"))
    );
    let (_, list) = s.config("list_groups", NORMAL, json!({})).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bots_take_chats_with_bot_tokens_that_can_be_revoked() {
    let s = TestServer::start().await;
    let _alice = s.login("alice-pat-1").await; // a human accepting in group 0
    let (code, bot) = s
        .config(
            "create_bot",
            OWNER,
            json!({"name": "Helper", "groups": [{"id": 0, "priority": "first"}]}),
        )
        .await;
    assert_eq!(code, 200, "{bot}");
    let bot_id = bot["id"].as_str().unwrap().to_owned();
    let secret = bot["secret"].as_str().unwrap().to_owned();
    assert_eq!((bot_id.len(), secret.len()), (32, 32));
    let issue = |secret: &str| json!({"bot_id": bot_id, "bot_secret": secret, "client_id": "my-app", "organization_id": "acme"});
    let (code, _) = s.config("issue_bot_token", None, issue("wrong")).await;
    assert_eq!(code, 401);
    let (code, body) = s.config("issue_bot_token", None, issue(&secret)).await;
    assert_eq!(code, 200, "{body}");
    let bot_auth = format!("Bearer {}", body["token"].as_str().unwrap());
    // A new bot is offline until it starts accepting.
    let (code, body) = s
        .web(
            "set_routing_status",
            Some(&bot_auth),
            json!({"status": "accepting_chats"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Priority `first`: the bot gets the next chat before the human.
    let (mut cust, _) = s.customer("acme").await;
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"thread": {"events": [{"type": "message", "text": "hi bot"}]}}}),
        )
        .await;
    let chat_id = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    cust.push("incoming_chat").await;
    let (code, chat) = s
        .web("get_chat", Some(&bot_auth), json!({"chat_id": chat_id}))
        .await;
    assert_eq!(code, 200, "{chat}");
    assert!(
        chat["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == bot_id.as_str() && u["present"] == true),
        "{chat}"
    );
    let (code, r) = s
        .web(
            "send_event",
            Some(&bot_auth),
            json!({"chat_id": chat_id, "event": {"type": "message", "text": "Hello, I am a bot"}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let p = cust.push("incoming_event").await;
    assert_eq!(p["payload"]["event"]["author_id"], bot_id.as_str());
    let (_, bots) = s.config("list_bots", NORMAL, json!({})).await;
    assert_eq!(ids(&bots), vec![bot_id.as_str()]);
    let (_, got) = s.config("get_bot", NORMAL, json!({"id": bot_id})).await;
    assert_eq!(got["default_group_priority"], "first");
    // Revocation: a new secret invalidates the old secret and every bot token at once.
    let (code, body) = s
        .config("reset_bot_secret", OWNER, json!({"id": bot_id}))
        .await;
    assert_eq!(code, 200);
    let new_secret = body["secret"].as_str().unwrap().to_owned();
    let (code, _) = s.web("list_chats", Some(&bot_auth), json!({})).await;
    assert_eq!(
        code, 401,
        "the old bot token is revoked on the next request"
    );
    let (code, _) = s.config("issue_bot_token", None, issue(&secret)).await;
    assert_eq!(code, 401, "the old secret is revoked");
    let (code, body) = s.config("issue_bot_token", None, issue(&new_secret)).await;
    assert_eq!(code, 200);
    let bot_auth = format!("Bearer {}", body["token"].as_str().unwrap());
    // The bot's status survives a restart (bots need no connection).
    let s = s.restart().await;
    let (code, body) = s
        .web("list_routing_statuses", Some(&bot_auth), json!({}))
        .await;
    assert_eq!(code, 403, "a bot token lacks agents--all:ro: {body}");
    let (_, list) = s.web("list_routing_statuses", OWNER, json!({})).await;
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["agent_id"] == bot_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(me["status"], "accepting_chats");
    // Deleting the bot hands its chat to a human and revokes its token.
    let mut alice = s.login("alice-pat-1").await;
    let (code, _) = s.config("delete_bot", OWNER, json!({"id": bot_id})).await;
    assert_eq!(code, 200);
    let p = alice.push("incoming_chat").await;
    assert_eq!(p["payload"]["chat"]["id"], chat_id);
    let (code, _) = s.web("list_chats", Some(&bot_auth), json!({})).await;
    assert_eq!(code, 401);
    alice
        .no_push("bot_deleted_twice", Duration::from_millis(10))
        .await;
}

#[tokio::test]
async fn api_key_exchange_refresh_and_discovery() {
    let s = TestServer::start().await;
    let auth = |key: Option<&str>, secret: &str| {
        let url = s.url("/v1/auth");
        let body = json!({"secret": secret}).to_string();
        let key = key.map(str::to_owned);
        async move {
            let mut req = reqwest::Client::new().post(url).body(body);
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(auth(None, "alice-secret-0123456789").await.0, 401);
    assert_eq!(
        auth(Some("alice-key-1"), "wrong-secret-000000").await.0,
        401
    );
    let (code, token) = auth(Some("alice-key-1"), "alice-secret-0123456789").await;
    assert_eq!(code, 200, "{token}");
    assert_eq!(
        (token["token_type"].as_str(), token["expires_in"].as_u64()),
        (Some("Bearer"), Some(3600))
    );
    assert!(token["expires_at"].as_i64().unwrap() > 1_700_000_000);
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    // The access token acts as the key's agent, on the Web API and RTM.
    let (code, _) = s
        .web("list_routing_statuses", Some(&bearer), json!({}))
        .await;
    assert_eq!(code, 200);
    let mut rtm = s.rtm().await;
    let r = rtm.request("login", json!({"token": bearer})).await;
    assert_eq!(r["payload"]["my_profile"]["id"], "alice@acme.test");
    // Discovery.
    let resp = reqwest::Client::new()
        .get(s.url("/v1/apis"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let apis: Value = resp.json().await.unwrap();
    assert_eq!(
        apis["apis"]["agent_chat"],
        format!("http://{}/v3.5/agent/action", s.addr)
    );
    assert_eq!(
        apis["apis"]["agent_chat_rtm"],
        format!("ws://{}/v3.5/agent/rtm/ws", s.addr)
    );
    let resp = reqwest::Client::new()
        .get(s.url("/v1/apis"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Refresh: a new token, the old one revoked at once.
    let refresh = |auth: String| {
        let url = s.url("/v1/refresh_token");
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (code, fresh) = refresh(bearer.clone()).await;
    assert_eq!(code, 200, "{fresh}");
    let fresh_bearer = format!("Bearer {}", fresh["access_token"].as_str().unwrap());
    assert_ne!(fresh_bearer, bearer);
    let (code, _) = s
        .web("list_routing_statuses", Some(&bearer), json!({}))
        .await;
    assert_eq!(code, 401, "the refreshed token is revoked");
    let (code, _) = s
        .web("list_routing_statuses", Some(&fresh_bearer), json!({}))
        .await;
    assert_eq!(code, 200);
    let (code, _) = refresh("Bearer alice-pat-1".into()).await;
    assert_eq!(code, 401, "only access tokens refresh");
    // Nothing secret is stored in clear.
    let s = s.restart().await;
    let (code, _) = s
        .web("list_routing_statuses", Some(&fresh_bearer), json!({}))
        .await;
    assert_eq!(
        code, 200,
        "access tokens survive a restart until they expire"
    );
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(s.dir.path().join("data")).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let text = String::from_utf8_lossy(&stored);
    for secret in [
        "alice-secret-0123456789",
        "alice-pat-1",
        "alice-key-1",
        fresh["access_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "`{secret}` is stored in clear");
    }
}

#[tokio::test]
async fn another_organizations_ids_look_absent_everywhere() {
    let s = TestServer::start().await;
    // Real ids in Globex: a chat with a customer, its agent, a bot and a group.
    let mut eve = s.login("eve-pat-1").await;
    let eve_auth = Some("Bearer eve-pat-1");
    // Group ids are small per-organization numbers (the protocol's): Globex's
    // first group is 1 like Acme's "Sales"; its second, 2, exists only there.
    let mut globex_group = 0;
    for name in ["Globex VIP", "Globex Gold"] {
        let (_, g) = s
            .config(
                "create_group",
                eve_auth,
                json!({"name": name, "agent_priorities": {"eve@globex.test": "normal"}}),
            )
            .await;
        globex_group = g["id"].as_u64().unwrap();
    }
    assert_eq!(globex_group, 2);
    let (_, bot) = s
        .config("create_bot", eve_auth, json!({"name": "Globex bot"}))
        .await;
    let globex_bot = bot["id"].as_str().unwrap().to_owned();
    let (gtoken, globex_customer) = s.customer_token("globex", None).await;
    let (_, r) = s
        .customer_web(
            "globex",
            "start_chat",
            &gtoken,
            json!({"chat": {"thread": {"events": [{"type": "message", "text": "secret"}]}}}),
        )
        .await;
    let globex_chat = r["chat_id"].as_str().unwrap().to_owned();
    eve.push("incoming_chat").await;
    let (_, before) = s
        .web("get_chat", eve_auth, json!({"chat_id": globex_chat}))
        .await;

    // Acme's owner probes with them.
    let acme = Some("Bearer alice-pat-1");
    let _alice = s.login("alice-pat-1").await;
    let chat = json!(globex_chat);
    let agent_probes: Vec<(&str, Value)> = vec![
        ("get_chat", json!({"chat_id": chat})),
        ("list_threads", json!({"chat_id": chat})),
        (
            "send_event",
            json!({"chat_id": chat, "event": {"type": "message", "text": "x"}}),
        ),
        (
            "deactivate_chat",
            json!({"id": chat, "ignore_requester_presence": true}),
        ),
        ("resume_chat", json!({"chat": {"id": chat}})),
        ("follow_chat", json!({"id": chat})),
        ("unfollow_chat", json!({"id": chat})),
        (
            "transfer_chat",
            json!({"id": chat, "ignore_requester_presence": true}),
        ),
        (
            "add_user_to_chat",
            json!({"chat_id": chat, "user_id": "alice@acme.test", "user_type": "agent", "visibility": "all", "ignore_requester_presence": true}),
        ),
        (
            "remove_user_from_chat",
            json!({"chat_id": chat, "user_id": "eve@globex.test", "user_type": "agent", "ignore_requester_presence": true}),
        ),
        (
            "mark_events_as_seen",
            json!({"chat_id": chat, "seen_up_to": "2030-01-01T00:00:00Z"}),
        ),
        (
            "send_typing_indicator",
            json!({"chat_id": chat, "is_typing": true}),
        ),
        ("list_agents_for_transfer", json!({"chat_id": chat})),
        (
            "set_routing_status",
            json!({"agent_id": "eve@globex.test", "status": "not_accepting_chats"}),
        ),
        (
            "set_routing_status",
            json!({"agent_id": globex_bot, "status": "offline"}),
        ),
        (
            "start_chat",
            json!({"chat": {"users": [{"id": globex_customer, "type": "customer"}]}}),
        ),
        (
            "start_chat",
            json!({"chat": {"users": [{"id": "eve@globex.test", "type": "agent"}]}}),
        ),
    ];
    for (method, body) in agent_probes {
        let (code, resp) = s.web(method, acme, body.clone()).await;
        assert_eq!(code, 404, "{method} {body}: {resp}");
        assert_eq!(resp["error"]["type"], "not_found", "{method}: {resp}");
    }
    let config_probes: Vec<(&str, Value, &str)> = vec![
        ("get_agent", json!({"id": "eve@globex.test"}), "not_found"),
        (
            "update_agent",
            json!({"id": "eve@globex.test", "name": "pwned"}),
            "not_found",
        ),
        (
            "delete_agent",
            json!({"id": "eve@globex.test"}),
            "not_found",
        ),
        (
            "suspend_agent",
            json!({"id": "eve@globex.test"}),
            "not_found",
        ),
        ("get_bot", json!({"id": globex_bot}), "not_found"),
        (
            "update_bot",
            json!({"id": globex_bot, "name": "pwned"}),
            "not_found",
        ),
        ("delete_bot", json!({"id": globex_bot}), "not_found"),
        ("reset_bot_secret", json!({"id": globex_bot}), "not_found"),
        ("get_group", json!({"id": globex_group}), "group_not_found"),
        (
            "update_group",
            json!({"id": globex_group, "name": "pwned"}),
            "group_not_found",
        ),
        (
            "delete_group",
            json!({"id": globex_group}),
            "group_not_found",
        ),
    ];
    for (method, body, kind) in config_probes {
        let (code, resp) = s.config(method, acme, body.clone()).await;
        assert_eq!(code, 404, "{method} {body}: {resp}");
        assert_eq!(resp["error"]["type"], kind, "{method}: {resp}");
    }
    // An Acme customer cannot reach the Globex chat either.
    let (atoken, _) = s.customer_token("acme", None).await;
    for (method, body) in [
        ("get_chat", json!({"chat_id": chat})),
        (
            "send_event",
            json!({"chat_id": chat, "event": {"type": "message", "text": "x"}}),
        ),
        ("deactivate_chat", json!({"id": chat})),
    ] {
        let (code, resp) = s.customer_web("acme", method, &atoken, body).await;
        assert_eq!(code, 404, "{method}: {resp}");
    }
    let (code, _) = web_call(
        &s.url("/customer/token"),
        None,
        json!({"organization_id": "acme", "customer_id": globex_customer}).to_string(),
        &[],
    )
    .await;
    assert_eq!(
        code, 404,
        "a Globex customer cannot be continued through Acme"
    );
    // Nothing changed in Globex.
    let (_, after) = s
        .web("get_chat", eve_auth, json!({"chat_id": globex_chat}))
        .await;
    assert_eq!(before, after);
    let (_, eve_agent) = s
        .config("get_agent", eve_auth, json!({"id": "eve@globex.test"}))
        .await;
    assert_eq!(eve_agent["name"], "eve@globex.test");
    let (_, statuses) = s.web("list_routing_statuses", eve_auth, json!({})).await;
    assert!(
        statuses
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["agent_id"] != "alice@acme.test"),
        "{statuses}"
    );
}

#[tokio::test]
async fn scopes_decide_what_each_token_may_do() {
    let s = TestServer::start().await;
    let _alice = s.login("alice-pat-1").await;
    // A chat only group 2 may see (group 2 made by the owner, nobody else in it).
    let (_, g) = s
        .config(
            "create_group",
            OWNER,
            json!({"name": "Secret", "agent_priorities": {"alice@acme.test": "normal"}}),
        )
        .await;
    let group = g["id"].as_u64().unwrap();
    let (token, _) = s.customer_token("acme", None).await;
    let (_, r) = s
        .customer_web(
            "acme",
            "start_chat",
            &token,
            json!({"chat": {"access": {"group_ids": [group]}}}),
        )
        .await;
    let chat_id = r["chat_id"].as_str().unwrap().to_owned();

    // (token, method, body, expected status)
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        // A read-only token of the owner reads but cannot write.
        ("alice-ro-1", "list_chats", json!({}), 200),
        ("alice-ro-1", "get_chat", json!({"chat_id": chat_id}), 200),
        (
            "alice-ro-1",
            "send_event",
            json!({"chat_id": chat_id, "event": {"type": "message", "text": "x"}}),
            403,
        ),
        ("alice-ro-1", "list_routing_statuses", json!({}), 403),
        (
            "alice-ro-1",
            "multicast",
            json!({"recipients": {"agents": {"all": true}}, "content": 1}),
            403,
        ),
        (
            "alice-ro-1",
            "set_routing_status",
            json!({"status": "accepting_chats"}),
            403,
        ),
        // Owners read every chat.
        ("alice-pat-1", "get_chat", json!({"chat_id": chat_id}), 200),
        // A normal agent reads only its groups' chats; a token cannot raise that.
        ("bob-pat-1", "get_chat", json!({"chat_id": chat_id}), 403),
        ("bob-all-1", "get_chat", json!({"chat_id": chat_id}), 403),
        ("bob-pat-1", "list_routing_statuses", json!({}), 200),
        ("bob-all-1", "list_routing_statuses", json!({}), 403),
        // An administrator reads every chat; with a chats--access token only its groups'.
        ("carol-pat-1", "get_chat", json!({"chat_id": chat_id}), 200),
        (
            "carol-access-1",
            "get_chat",
            json!({"chat_id": chat_id}),
            403,
        ),
        ("carol-access-1", "list_chats", json!({}), 200),
    ];
    for (token, method, body, want) in cases {
        let (code, resp) = s
            .web(method, Some(&format!("Bearer {token}")), body.clone())
            .await;
        assert_eq!(code, want, "{token} {method} {body}: {resp}");
        if want == 403 {
            let kind = resp["error"]["type"].as_str().unwrap();
            assert!(
                kind == "authorization" || kind == "missing_access",
                "{token} {method}: {resp}"
            );
        }
    }
    // Configuration API scopes: a chats-only token of an administrator cannot manage agents.
    let (code, body) = s
        .config("list_agents", Some("Bearer carol-access-1"), json!({}))
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = s
        .config("list_agents", Some("Bearer carol-pat-1"), json!({}))
        .await;
    assert_eq!(code, 200);
    // Token scopes apply to RTM sessions too.
    let mut ro = s.login("alice-ro-1").await;
    let r = ro
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": {"type": "message", "text": "x"}}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "authorization", "{r}");
    let r = ro.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(r["success"], true);
}

#[tokio::test]
async fn revoking_an_agents_tokens_ends_its_sessions_at_once() {
    let s = TestServer::start().await;
    let mut bob = s.login("bob-pat-1").await;
    let (code, _) = s
        .config(
            "revoke_agent_tokens",
            NORMAL,
            json!({"id": "alice@acme.test"}),
        )
        .await;
    assert_eq!(code, 403, "a normal agent cannot revoke another's tokens");
    let (code, _) = s
        .config("revoke_agent_tokens", ADMIN, json!({"id": "bob@acme.test"}))
        .await;
    assert_eq!(code, 200);
    let d = bob.disconnected().await;
    assert_eq!(d["payload"]["reason"], "access_token_revoked");
    for token in ["bob-pat-1", "bob-all-1"] {
        let (code, _) = s
            .web("list_chats", Some(&format!("Bearer {token}")), json!({}))
            .await;
        assert_eq!(code, 401, "{token} is revoked");
    }
    // Anyone may revoke their own; other agents keep theirs.
    let (code, _) = s
        .config(
            "revoke_agent_tokens",
            Some("Bearer carol-pat-1"),
            json!({"id": "carol@acme.test"}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .web("list_chats", Some("Bearer carol-pat-1"), json!({}))
        .await;
    assert_eq!(code, 401);
    let (code, _) = s.web("list_chats", OWNER, json!({})).await;
    assert_eq!(code, 200);
    // Revocations survive a restart.
    let s = s.restart().await;
    let (code, _) = s.web("list_chats", NORMAL, json!({})).await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn every_method_checks_its_scopes() {
    let s = TestServer::start().await;
    // A token with no scope at all beyond reading its own profile.
    let spec = toml_spec(
        r#"
[[organization]]
id = "acme"
name = "Acme"
[[organization.agent]]
id = "min@acme.test"
tokens = [{ token = "min-token-1", scopes = ["agents--my:ro"] }]
"#,
    );
    s.running
        .as_ref()
        .unwrap()
        .engine
        .provision(&spec)
        .await
        .unwrap();
    let minimal = Some("Bearer min-token-1");
    let _alice = s.login("alice-pat-1").await;
    let mut checked = 0;
    for (method, transports) in chatgate_protocol::methods::AGENT_METHODS {
        if *transports == chatgate_protocol::methods::Transports::RtmOnly {
            continue;
        }
        // set_routing_status checks scopes against its target: give one.
        let payload = if *method == "set_routing_status" {
            json!({"status": "accepting_chats"})
        } else {
            json!({})
        };
        let (_, body) = s.web(method, minimal, payload).await;
        let refused = body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("missing scope"));
        let needs_nothing = [
            "list_agents_for_transfer",
            "unfollow_chat",
            "upload_file",
            "get_license_info",
        ]
        .contains(method);
        assert_eq!(refused, !needs_nothing, "{method}: {body}");
        if refused {
            assert_eq!(body["error"]["type"], "authorization", "{method}");
        }
        checked += 1;
    }
    for method in chatgate_protocol::config::CONFIGURATION_METHODS {
        if *method == "issue_bot_token" {
            continue;
        }
        let (_, body) = s.config(method, minimal, json!({"id": "x"})).await;
        let refused = body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("missing scope"));
        // get_agent and update_agent of oneself need only agents--my.
        let allowed_mine = ["get_agent"].contains(method);
        assert_eq!(refused, !allowed_mine, "{method}: {body}");
        checked += 1;
    }
    assert!(checked > 40, "{checked}");
    // With the owner's token no method is refused for scopes.
    for (method, transports) in chatgate_protocol::methods::AGENT_METHODS {
        if *transports == chatgate_protocol::methods::Transports::RtmOnly {
            continue;
        }
        let (_, body) = s.web(method, OWNER, json!({})).await;
        assert!(
            !body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("missing scope")),
            "{method}: {body}"
        );
    }
}

#[tokio::test]
async fn tokens_from_the_configuration_api_and_push_audiences_by_scope() {
    let s = TestServer::start().await;
    // An administrator issues a read-only token for a normal agent.
    let (code, body) = s
        .config(
            "create_agent_token",
            ADMIN,
            json!({"id": "bob@acme.test", "scopes": ["chats--access:ro"]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let ro = format!("Bearer {}", body["token"].as_str().unwrap());
    let (code, _) = s.web("list_chats", Some(&ro), json!({})).await;
    assert_eq!(code, 200);
    let (code, _) = s
        .web(
            "multicast",
            Some(&ro),
            json!({"recipients": {"agents": {"all": true}}, "content": 1}),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .config(
            "create_agent_token",
            NORMAL,
            json!({"id": "alice@acme.test"}),
        )
        .await;
    assert_eq!(code, 403, "a normal agent issues tokens only for itself");
    let (code, _) = s
        .config(
            "create_agent_token",
            NORMAL,
            json!({"id": "bob@acme.test", "scopes": ["bogus"]}),
        )
        .await;
    assert_eq!(code, 400);
    // The owner issues itself a token limited to its groups' chats.
    let (_, body) = s
        .config(
            "create_agent_token",
            OWNER,
            json!({"id": "alice@acme.test", "scopes": ["chats--access:rw", "agents--my:rw"]}),
        )
        .await;
    let limited = body["token"].as_str().unwrap().to_owned();
    // A group Alice is not in, with Carol accepting.
    let (_, g) = s
        .config(
            "create_group",
            OWNER,
            json!({"name": "Carol only", "agent_priorities": {"carol@acme.test": "normal"}}),
        )
        .await;
    let group = g["id"].as_u64().unwrap();
    let mut carol = s.login("carol-pat-1").await;
    carol
        .request("set_routing_status", json!({"status": "accepting_chats"}))
        .await;
    let mut full = s.login("alice-pat-1").await;
    let mut narrow = s.login(&limited).await;
    let mut bob = s.login("bob-pat-1").await;
    let (token, _) = s.customer_token("acme", None).await;
    let (code, r) = s
        .customer_web(
            "acme",
            "start_chat",
            &token,
            json!({"chat": {"access": {"group_ids": [group]}}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let chat_id = r["chat_id"].as_str().unwrap().to_owned();
    carol.push("incoming_chat").await;
    assert_eq!(
        full.push("incoming_chat").await["payload"]["chat"]["id"],
        chat_id,
        "the owner's full session sees every chat"
    );
    narrow
        .no_push("incoming_chat", Duration::from_millis(300))
        .await;
    bob.no_push("incoming_chat", Duration::from_millis(10))
        .await;
    let (code, _) = s
        .web(
            "get_chat",
            Some(&format!("Bearer {limited}")),
            json!({"chat_id": chat_id}),
        )
        .await;
    assert_eq!(code, 403, "nor can the limited token read it");
    // Issued tokens and their scopes survive a restart.
    drop((full, narrow, bob, carol));
    let s = s.restart().await;
    let (code, _) = s.web("list_chats", Some(&ro), json!({})).await;
    assert_eq!(code, 200);
    let (code, _) = s
        .web(
            "multicast",
            Some(&ro),
            json!({"recipients": {"agents": {"all": true}}, "content": 1}),
        )
        .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn tags_are_defined_per_group() {
    let s = TestServer::start().await;
    let create = |name: &str, groups: Value| json!({"name": name, "group_ids": groups});
    let (code, body) = s
        .config("create_tag", OWNER, create("bug_report", json!([0])))
        .await;
    assert_eq!((code, &body), (200, &json!({})));
    let (code, _) = s
        .config("create_tag", OWNER, json!({"name": "sales"}))
        .await;
    assert_eq!(code, 200, "group_ids default to [0]");
    // Names are unique regardless of case; groups must exist; names must not be blank.
    let (code, body) = s
        .config("create_tag", OWNER, create("Bug_Report", json!([1])))
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation")),
        "{body}"
    );
    let (code, body) = s.config("create_tag", OWNER, create("x", json!([9]))).await;
    assert_eq!(body["error"]["type"], "group_not_found", "{code} {body}");
    let (code, _) = s
        .config("create_tag", OWNER, create("  ", json!([0])))
        .await;
    assert_eq!(code, 400);
    let mut watcher = s.login("bob-pat-1").await;
    let (code, _) = s
        .config("update_tag", OWNER, create("sales", json!([1])))
        .await;
    assert_eq!(code, 200);
    let p = watcher.push("tag_updated").await;
    assert_eq!(p["payload"], json!({"name": "sales", "group_ids": [1]}));
    let (code, body) = s
        .config("update_tag", OWNER, create("nope", json!([1])))
        .await;
    assert_eq!(body["error"]["type"], "not_found", "{code} {body}");
    // Listing, with a group filter.
    let (code, list) = s.config("list_tags", OWNER, json!({})).await;
    assert_eq!(code, 200);
    let names: Vec<(&str, &Value, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                &t["group_ids"],
                t["author_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("bug_report", &json!([0]), "alice@acme.test"),
            ("sales", &json!([1]), "alice@acme.test")
        ]
    );
    assert!(list[0]["created_at"].as_str().unwrap().ends_with('Z'));
    let (_, list) = s
        .config("list_tags", OWNER, json!({"filters": {"group_ids": [1]}}))
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "sales");
    // A normal agent (group 0) reads only its groups' tags and manages none.
    let (code, list) = s.config("list_tags", NORMAL, json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "bug_report");
    let (code, _) = s
        .config("delete_tag", NORMAL, json!({"name": "bug_report"}))
        .await;
    assert_eq!(code, 403);
    // `tags--groups:rw` manages the requester's own groups' tags only
    // (Carol is in group 1).
    let (_, body) = s
        .config(
            "create_agent_token",
            OWNER,
            json!({"id": "carol@acme.test", "scopes": ["tags--groups:rw"]}),
        )
        .await;
    let carol = format!("Bearer {}", body["token"].as_str().unwrap());
    let (code, _) = s
        .config("create_tag", Some(&carol), create("leads", json!([1])))
        .await;
    assert_eq!(code, 200);
    let (code, body) = s
        .config("create_tag", Some(&carol), create("ops", json!([0])))
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("authorization"))
    );
    let (code, _) = s
        .config("delete_tag", Some(&carol), json!({"name": "bug_report"}))
        .await;
    assert_eq!(code, 403);
    // Definitions survive a restart; deleting is by exact name.
    drop(watcher);
    let s = s.restart().await;
    let (_, list) = s.config("list_tags", OWNER, json!({})).await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    let (code, _) = s
        .config("delete_tag", OWNER, json!({"name": "BUG_REPORT"}))
        .await;
    assert_eq!(code, 404);
    let mut watcher = s.login("bob-pat-1").await;
    let (code, _) = s
        .config("delete_tag", OWNER, json!({"name": "bug_report"}))
        .await;
    assert_eq!(code, 200);
    let p = watcher.push("tag_deleted").await;
    assert_eq!(p["payload"], json!({"name": "bug_report"}));
    drop(watcher);
    let s = s.restart().await;
    let (_, list) = s.config("list_tags", OWNER, json!({})).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["leads", "sales"]);
}
