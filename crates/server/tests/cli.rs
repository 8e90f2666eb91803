//! The `chatgate` binary: bad configuration exits non-zero with one clear
//! line before binding; SIGTERM shuts down gracefully with exit status 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chatgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chatgate"));
    c.env_remove("CHATGATE_LOG").env("NO_COLOR", "1");
    c
}

/// Runs to completion; returns (exit code, stderr lines).
fn fails(args: &[&str], dir: &std::path::Path) -> (i32, Vec<String>) {
    let out = chatgate()
        .args(args)
        .current_dir(dir)
        .env("CHATGATE_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        stderr.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn bad_configuration_exits_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[organization]]\nname = \"X\"\n[[organization.agent]]\nid = \"a@x\"\nrole = \"king\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("syntax.toml"), "[[organization]\n").unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "serve",
                "--provision",
                "bad.toml",
                "--listen",
                "127.0.0.1:0",
            ],
            1,
            "role `king`",
        ),
        (
            &[
                "serve",
                "--provision",
                "syntax.toml",
                "--listen",
                "127.0.0.1:0",
            ],
            2,
            "invalid provisioning file",
        ),
        (
            &["serve", "--provision", "missing.toml"],
            2,
            "cannot read provisioning file",
        ),
        (
            &[
                "serve",
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert",
                "nope.pem",
                "--tls-key",
                "nope.pem",
                "--listen",
                "127.0.0.1:0",
            ],
            1,
            "TLS: cannot read certificate",
        ),
        (&["serve", "--max-body", "10"], 2, "--max-body"),
        (&["serve", "--ws-read-buffer", "16"], 2, "--ws-read-buffer"),
        (
            &["serve", "--commit-delay-us", "20000"],
            2,
            "--commit-delay-us",
        ),
    ];
    for (args, code, text) in cases {
        let (got, lines) = fails(args, dir.path());
        assert_eq!(got, *code, "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {lines:?}");
        assert!(
            lines[0].starts_with("chatgate: ") && lines[0].contains(text),
            "{args:?}: {lines:?}"
        );
    }
    // Flags that need each other are refused by the parser.
    let (code, _) = fails(&["serve", "--tls-listen", "127.0.0.1:0"], dir.path());
    assert_eq!(code, 2);
}

#[test]
fn environment_variables_configure_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    // A port already in use: one line, non-zero, nothing left running.
    let (code, lines) = fails(
        &["serve", "--listen", &busy_addr, "--data-dir", "d1"],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(
        lines.len() == 1 && lines[0].contains("cannot listen on"),
        "{lines:?}"
    );

    let mut child = chatgate()
        .arg("serve")
        .env("CHATGATE_LISTEN", "127.0.0.1:0")
        .env("CHATGATE_DATA_DIR", dir.path().join("d2"))
        .env("CHATGATE_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let serving = loop {
        let line = lines.next().expect("output").unwrap();
        if line.contains("chatgate serving") {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    };
    let v: serde_json::Value = serde_json::from_str(&serving).unwrap();
    assert!(
        v["fields"]["data_dir"].as_str().unwrap().ends_with("d2"),
        "{v}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
}
