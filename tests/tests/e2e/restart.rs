//! Durability across restarts: provisioned agents, tokens and remembered
//! statuses survive; provisioning is idempotent; one process per data dir.

use crate::harness::*;
use serde_json::json;

#[tokio::test]
async fn restart_keeps_agents_tokens_and_statuses() {
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let r = alice
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    assert_eq!(r["success"], true);
    // The response came after the commit; stop and start on the same data.
    // Nothing re-provisioned: everything comes from the store.
    let s2 = s.restart().await;
    let (code, body) = s2
        .web("list_routing_statuses", Some("Bearer bob-pat-1"), json!({}))
        .await;
    assert_eq!(code, 200, "tokens survive: {body}");
    assert_eq!(body.as_array().unwrap().len(), 4, "agents survive: {body}");
    // `reconnect: true` restores the last chosen status...
    let mut c = s2.rtm().await;
    let r = c
        .request(
            "login",
            json!({"token": "Bearer alice-pat-1", "reconnect": true}),
        )
        .await;
    assert_eq!(
        r["payload"]["my_profile"]["routing_status"], "not_accepting_chats",
        "{r}"
    );
    assert_eq!(r["payload"]["license"]["organization_id"], "acme");
    drop(c);
    // ...while a plain login starts from the configured login status.
    let mut other = s2.login("bob-pat-1").await;
    let p = other.request("list_routing_statuses", json!({})).await;
    assert!(p["success"].as_bool().unwrap());
    let mut c = s2.rtm().await;
    // Wait until alice's previous session is gone (offline) before a fresh login.
    loop {
        let l = other.request("list_routing_statuses", json!({})).await;
        let st = l["payload"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["agent_id"] == "alice@acme.test")
            .unwrap()["status"]
            .clone();
        if st == "offline" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = c
        .request("login", json!({"token": "Bearer alice-pat-1"}))
        .await;
    assert_eq!(
        r["payload"]["my_profile"]["routing_status"], "accepting_chats",
        "{r}"
    );
}

#[tokio::test]
async fn provisioning_is_idempotent_and_the_data_dir_is_exclusive() {
    let mut s = TestServer::start().await;
    let org_license = {
        let mut c = s.login("alice-pat-1").await;
        c.request("login", json!({})).await; // second login on a logged-in connection is refused
        let r = s
            .rtm()
            .await
            .request("login", json!({"token": "Bearer alice-pat-1"}))
            .await;
        r["payload"]["license"]["id"].clone()
    };
    // A second server on the same data directory is refused while the first runs.
    let clash = chatgate_server::start(config(s.dir.path())).await;
    let msg = clash.expect_err("the data directory is locked").to_string();
    assert!(msg.contains("in use by another chatgate process"), "{msg}");
    s.stop().await;
    // Provisioning the same file again changes nothing and keeps ids.
    let cfg = config(s.dir.path());
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let s2 = TestServer::start_with(dir, cfg).await;
    let report = s2.running.as_ref().unwrap().provisioned.clone().unwrap();
    assert_eq!(report.agents, 5);
    let r = s2
        .rtm()
        .await
        .request("login", json!({"token": "Bearer alice-pat-1"}))
        .await;
    assert_eq!(
        r["payload"]["license"]["id"], org_license,
        "license id is stable across re-provisioning"
    );
    let (_, body) = s2
        .web(
            "list_routing_statuses",
            Some("Bearer alice-pat-1"),
            json!({}),
        )
        .await;
    assert_eq!(body.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn bad_provisioning_is_refused_before_binding() {
    let cases = [
        (
            "[[organization]]\nname = \"X\"\n[[organization.agent]]\nid = \"a@x\"\nrole = \"king\"\n",
            "role `king`",
        ),
        (
            "[[organization]]\nname = \"X\"\n[[organization.agent]]\nid = \"a@x\"\ngroups = [9]\n",
            "group 9 is not defined",
        ),
        (
            "[[organization]]\nname = \"X\"\n[[organization.agent]]\nid = \"a@x\"\ntokens = [\"short\"]\n",
            "shorter than",
        ),
        (
            "[[organization]]\nname = \"X\"\n[[organization.agent]]\nid = \"a@x\"\ntokens = [\"same-token-1\"]\n[[organization.agent]]\nid = \"b@x\"\ntokens = [\"same-token-1\"]\n",
            "also given to",
        ),
        (
            "[[organization]]\nname = \"X\"\n[[organization.agent]]\nid = \"noemail\"\n",
            "e-mail",
        ),
        (
            "[[organization]]\nname = \"X\"\n[[organization.agent]]\nid = \"a@x\"\nmax_chats = 99\n",
            "max_chats",
        ),
    ];
    for (text, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.provision = Some(toml_spec(text));
        let err = chatgate_server::start(cfg)
            .await
            .expect_err(text)
            .to_string();
        assert!(err.contains(expect), "{err:?} should mention {expect:?}");
    }
    // Unknown fields are typos, not silently ignored.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "[[organization]]\nname = \"X\"\nnmae = \"typo\"\n").unwrap();
    let err = chatgate_server::load_provision(&p).unwrap_err().to_string();
    assert!(err.contains("nmae") && err.contains("line 3"), "{err}");
}
