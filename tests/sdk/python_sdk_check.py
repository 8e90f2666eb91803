"""Drives a real chatgate binary with the vendor's Python SDK (lc-sdk-python 0.4.2).

Starts `chatgate serve` with a TLS listener (self-signed certificate; the SDK
only speaks wss:// and https:// and does not verify certificates for RTM),
then logs in as a provisioned agent over RTM, sets and lists routing statuses,
checks a bad token over RTM and Web, and checks that a routing-status push
reaches a second SDK client. Prints `N passed, M failed` and exits non-zero
on any failure.

Usage: python_sdk_check.py <path to chatgate binary>
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

import httpx
from livechat.agent.rtm.base import AgentRTM
from livechat.agent.web.base import AgentWeb
from livechat.configuration.base import ConfigurationApi
from livechat.customer.rtm.base import CustomerRTM
from livechat.customer.web.base import CustomerWeb

PROVISION = """
[[organization]]
id = "acme"
name = "Acme"
[[organization.agent]]
id = "alice@acme.test"
name = "Alice"
role = "owner"
tokens = ["alice-pat-1"]
[[organization.agent]]
id = "bob@acme.test"
name = "Bob"
tokens = ["bob-pat-1"]
"""

results = []


def check(name, fn):
    try:
        fn()
        results.append((name, None))
        print(f"ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure
        results.append((name, e))
        print(f"FAIL {name}: {e!r}")
        traceback.print_exc()


def start_server(binary, workdir):
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    prov = os.path.join(workdir, "provision.toml")
    with open(prov, "w") as f:
        f.write(PROVISION)
    log = open(os.path.join(workdir, "server.log"), "w+")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
         "--tls-cert", cert, "--tls-key", key, "--data-dir", os.path.join(workdir, "data"),
         "--provision", prov, "--log-format", "json"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        log.seek(0)
        for line in log:
            if "chatgate serving" in line:
                fields = json.loads(line)["fields"]
                tls = re.search(r"Some\((.+)\)", fields["tls_addr"]).group(1)
                return proc, tls
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError("chatgate exited: " + log.read())
        time.sleep(0.1)
    raise RuntimeError("chatgate did not start within 30 s")


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as workdir:
        proc, base_url = start_server(binary, workdir)
        try:
            run_checks(base_url)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    failed = sum(1 for _, e in results if e is not None)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run_checks(base_url):
    alice = AgentRTM.get_client(version="3.5", base_url=base_url)
    alice.open_connection()
    bob = AgentRTM.get_client(version="3.5", base_url=base_url)
    bob.open_connection()

    def rtm_login():
        r = alice.login(token="Bearer alice-pat-1")
        assert r.success, r.payload
        assert r.payload["my_profile"]["id"] == "alice@acme.test", r.payload
        assert r.payload["my_profile"]["routing_status"] == "accepting_chats", r.payload
        assert r.payload["license"]["organization_id"] == "acme", r.payload
        assert r.payload["chats_summary"] == [], r.payload

    def rtm_bad_token():
        c = AgentRTM.get_client(version="3.5", base_url=base_url)
        c.open_connection()
        try:
            r = c.login(token="Bearer wrong")
            assert r.success is False, r.payload
            assert r.payload["error"]["type"] == "authentication", r.payload
            assert r.payload["error"]["message"] == "Invalid access token", r.payload
        finally:
            c.close_connection()

    def rtm_set_and_list_statuses():
        r = bob.login(token="Bearer bob-pat-1")
        assert r.success, r.payload
        r = bob.set_routing_status(status="not_accepting_chats")
        assert r.success, r.payload
        r = alice.list_routing_statuses()
        assert r.success, r.payload
        statuses = {e["agent_id"]: e["status"] for e in r.payload}
        assert statuses == {"alice@acme.test": "accepting_chats", "bob@acme.test": "not_accepting_chats"}, statuses
        r = alice.list_routing_statuses(filters={"group_ids": [0]})
        assert r.success and len(r.payload) == 2, r.payload

    def rtm_push_reaches_other_sdk_client():
        deadline = time.time() + 5
        while time.time() < deadline:
            pushes = [m for m in alice.ws.messages
                      if m.get("type") == "push" and m.get("action") == "routing_status_set"
                      and m["payload"] == {"agent_id": "bob@acme.test", "status": "not_accepting_chats"}]
            if pushes:
                assert pushes[0]["version"] == "3.5"
                return
            time.sleep(0.1)
        raise AssertionError(f"no routing_status_set push; got {alice.ws.messages}")

    def rtm_errors():
        r = alice.set_routing_status(status="not_accepting_chats", agent_id="nobody@acme.test")
        assert r.success is False and r.payload["error"]["type"] == "not_found", r.payload
        r = bob.set_routing_status(status="accepting_chats", agent_id="alice@acme.test")
        assert r.success is False and r.payload["error"]["type"] == "authorization", r.payload

    def web_calls():
        web = AgentWeb.get_client(access_token="Bearer alice-pat-1", version="3.5",
                                  base_url=base_url, verify=False)
        r = web.list_routing_statuses()
        assert r.status_code == 200, r.text
        assert {e["agent_id"] for e in r.json()} == {"alice@acme.test", "bob@acme.test"}, r.text
        r = web.set_routing_status(status="not_accepting_chats")
        assert r.status_code == 200 and r.json() == {}, r.text
        bad = AgentWeb.get_client(access_token="Bearer wrong", version="3.5", base_url=base_url, verify=False)
        r = bad.list_routing_statuses()
        assert r.status_code == 401, r.text
        assert r.json() == {"error": {"type": "authentication", "message": "Invalid access token"}}, r.text

    def rtm_keepalive_with_sdk_pings():
        # The SDK pings every 5 s; the connection must stay open past the
        # server's own ping interval.
        time.sleep(6)
        r = alice.list_routing_statuses()
        assert r.success, r.payload

    check("RTM login as a provisioned agent", rtm_login)
    check("RTM login with a bad token answers authentication", rtm_bad_token)
    check("RTM set_routing_status and list_routing_statuses", rtm_set_and_list_statuses)
    check("RTM routing_status_set push reaches another SDK client", rtm_push_reaches_other_sdk_client)
    check("RTM not_found and authorization errors", rtm_errors)
    check("Web list/set routing status and a bad token", web_calls)
    check("RTM connection stays open with the SDK's pings", rtm_keepalive_with_sdk_pings)

    def wait_push(client, action, pred=lambda p: True, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for m in list(client.ws.messages):
                if m.get("type") == "push" and m.get("action") == action and pred(m["payload"]):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no {action} push; got {[m.get('action') for m in client.ws.messages]}")

    chat = {}

    def customer_starts_a_chat_routed_to_the_agent():
        assert alice.set_routing_status(status="accepting_chats").success
        assert bob.set_routing_status(status="not_accepting_chats").success
        token = httpx.post(f"https://{base_url}/customer/token", json={"organization_id": "acme"}, verify=False).json()
        chat["token"] = token["access_token"]
        cust = CustomerRTM.get_client(version="3.5", base_url=base_url, organization_id="acme")
        cust.open_connection()
        chat["cust"] = cust
        r = cust.login(token=f"Bearer {token['access_token']}")
        assert r.success, r.payload
        assert r.payload["customer"]["id"] == token["entity_id"], r.payload
        r = cust.start_chat(chat={"thread": {"events": [{"type": "message", "text": "Hi from the SDK"}]}})
        assert r.success, r.payload
        chat["id"] = r.payload["chat_id"]
        # The push with the request's id, which the vendor's customer SDK waits for.
        own = wait_push(cust, "incoming_chat", lambda p: p["chat"]["id"] == chat["id"])
        assert own.get("request_id") == r.request_id, own
        p = wait_push(alice, "incoming_chat", lambda p: p["chat"]["id"] == chat["id"])
        users = {u["id"]: u["present"] for u in p["payload"]["chat"]["users"]}
        assert users.get("alice@acme.test") is True, users

    def messages_both_ways():
        cust = chat["cust"]
        r = alice.send_event(chat_id=chat["id"], event={"type": "message", "text": "Hello from Alice", "visibility": "all"})
        assert r.success, r.payload
        wait_push(cust, "incoming_event", lambda p: p["event"].get("text") == "Hello from Alice")
        r = cust.send_event(chat_id=chat["id"], event={"type": "message", "text": "Thanks!"})
        assert r.success, r.payload
        wait_push(alice, "incoming_event", lambda p: p["event"].get("text") == "Thanks!")

    def transfer_to_a_second_agent():
        assert bob.set_routing_status(status="accepting_chats").success
        r = alice.transfer_chat(id=chat["id"], target={"type": "agent", "ids": ["bob@acme.test"]})
        assert r.success, r.payload
        wait_push(bob, "incoming_chat", lambda p: p["chat"]["id"] == chat["id"])
        t = wait_push(chat["cust"], "chat_transferred", lambda p: p["chat_id"] == chat["id"])
        assert t["payload"]["transferred_to"]["agent_ids"] == ["bob@acme.test"], t
        r = bob.send_event(chat_id=chat["id"], event={"type": "message", "text": "Bob here", "visibility": "all"})
        assert r.success, r.payload
        wait_push(chat["cust"], "incoming_event", lambda p: p["event"].get("text") == "Bob here")

    def deactivate_and_read_over_web():
        r = bob.deactivate_chat(id=chat["id"])
        assert r.success, r.payload
        wait_push(chat["cust"], "chat_deactivated", lambda p: p["chat_id"] == chat["id"])
        web = CustomerWeb.get_client(access_token=f"Bearer {chat['token']}", version="3.5", base_url=base_url,
                                     organization_id="acme", verify=False)
        r = web.get_chat(chat_id=chat["id"])
        assert r.status_code == 200, r.text
        texts = [e.get("text") for e in r.json()["thread"]["events"]]
        assert texts == ["Hi from the SDK", "Hello from Alice", "Thanks!", "Bob here"], texts
        assert r.json()["thread"]["active"] is False
        agent_web = AgentWeb.get_client(access_token="Bearer alice-pat-1", version="3.5", base_url=base_url, verify=False)
        r = agent_web.list_chats()
        assert r.status_code == 200 and r.json()["found_chats"] == 1, r.text
        chat["cust"].close_connection()

    check("customer (SDK) starts a chat routed to the agent (SDK)", customer_starts_a_chat_routed_to_the_agent)
    check("messages both ways", messages_both_ways)
    check("transfer to a second agent", transfer_to_a_second_agent)
    check("deactivate, then read the chat over the customer and agent Web APIs", deactivate_and_read_over_web)

    def bot_answers_a_chat_with_a_bot_token():
        cfg = ConfigurationApi.get_client(token="Bearer alice-pat-1", version="3.5", base_url=base_url, verify=False)
        r = cfg.create_bot(name="SDK bot", groups=[{"id": 0, "priority": "first"}])
        assert r.status_code == 200, r.text
        bot_id, secret = r.json()["id"], r.json()["secret"]
        r = cfg.issue_bot_token(bot_id=bot_id, bot_secret=secret, client_id="sdk-check", organization_id="acme")
        assert r.status_code == 200, r.text
        bot = AgentWeb.get_client(access_token=f"Bearer {r.json()['token']}", version="3.5", base_url=base_url, verify=False)
        r = bot.set_routing_status(status="accepting_chats")
        assert r.status_code == 200, r.text
        token = httpx.post(f"https://{base_url}/customer/token", json={"organization_id": "acme"}, verify=False).json()
        cust = CustomerRTM.get_client(version="3.5", base_url=base_url, organization_id="acme")
        cust.open_connection()
        assert cust.login(token=f"Bearer {token['access_token']}").success
        r = cust.start_chat(chat={"thread": {"events": [{"type": "message", "text": "Is anyone there?"}]}})
        assert r.success, r.payload
        chat_id = r.payload["chat_id"]
        r = bot.get_chat(chat_id=chat_id)
        assert r.status_code == 200, r.text
        present = [u["id"] for u in r.json()["users"] if u.get("present")]
        assert bot_id in present, present
        r = bot.send_event(chat_id=chat_id, event={"type": "message", "text": "A bot answers", "visibility": "all"})
        assert r.status_code == 200, r.text
        p = wait_push(cust, "incoming_event", lambda p: p["event"].get("text") == "A bot answers")
        assert p["payload"]["event"]["author_id"] == bot_id
        cust.close_connection()

    check("a bot (Configuration API + bot token) takes a chat and answers it", bot_answers_a_chat_with_a_bot_token)
    alice.close_connection()
    bob.close_connection()


if __name__ == "__main__":
    main()
