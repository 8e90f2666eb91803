//! One test binary for every end-to-end test (one link, shared helpers).

mod harness;

mod archives;
mod chats;
mod chats_more;
mod configuration;
mod docs;
mod limits;
mod metrics;
mod monitoring;
mod properties;
mod restart;
mod resume;
mod rtm_login;
mod rtm_status;
mod slow;
mod tls;
mod uploads;
mod web;
