//! wanbatch: a crash-proof, rate-aware batch runner for Segmind's Wan 2.2 image-to-video API.
//!
//! Map of the crate (where to look for what):
//! - `manifest`: CSV/JSONL rows → validated parameters and stable job ids;
//! - `store`: the SQLite database, the only owner of SQL; `state`: the job state machine;
//! - `api`: the Segmind v2 client and its error classification (429, 401, 406, 422, 404 …);
//! - `engine`: the dispatcher, the shared rate gate, poll scheduling, the downloader;
//! - `provenance`: the `ID.json` sidecar beside each video;
//! - `fake`: the fake Segmind server (API + video host) for demos and tests;
//! - `cmd`: one file per subcommand; `cli`: arguments and exit codes; `config`: wanbatch.toml.

pub mod api;
pub mod bench;
pub mod bench_engine;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod engine;
pub mod fake;
pub mod manifest;
pub mod mp4check;
pub mod progress;
pub mod provenance;
pub mod state;
pub mod store;
