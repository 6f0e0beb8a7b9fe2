//! `luring bench`: replays recorded traffic against proxies and measures them
//! (docs/bench.md). The origin serves recorded responses; the driver sends recorded
//! requests on a schedule and measures latency corrected for coordinated omission.

pub mod cli;
pub mod client_h2;
pub mod clock;
pub mod dial;
pub mod driver;
pub mod exchange;
pub mod form;
pub mod h1;
pub mod html;
pub mod input;
pub mod lanes;
pub mod matching;
pub mod origin;
pub mod origin_h2;
pub mod origin_net;
pub mod origin_tls;
pub mod plot;
pub mod prepared;
pub mod report;
pub mod response;
pub mod run;
pub mod sample;
pub mod schedule;
pub mod stats;
pub mod ws_client;
pub mod ws_replay;
