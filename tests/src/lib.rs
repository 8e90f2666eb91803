//! End-to-end tests of chatgate live in `tests/` of this crate: they start the
//! real server in-process on `127.0.0.1:0` with a temporary data directory
//! and speak RTM and HTTP like a client.
