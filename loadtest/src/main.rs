//! `chatgate-load`, the black-box load harness. Its scenarios (`idle`,
//! `chat`, `fanout`, `storm`, `ramp`, `compare`) arrive with the load-test
//! issue; until then the binary says so instead of pretending to measure.

use std::process::ExitCode;

fn main() -> ExitCode {
    let _ = chatgate_protocol::Version::ALL; // the harness speaks through the protocol crate only
    eprintln!(
        "chatgate-load: no scenarios are implemented yet (see loadtest/README.md); nothing was measured"
    );
    ExitCode::from(2)
}
