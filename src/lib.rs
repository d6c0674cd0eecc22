//! wanbatch: a crash-proof, rate-aware batch runner for Segmind's Wan 2.2 image-to-video API.
//!
//! Map of the crate (where to look for what):
//! - `manifest`: CSV/JSONL rows → validated parameters and stable job ids;
//! - `store`: the SQLite database, the only owner of SQL; `state`: the job state machine;
//! - `api`: the Segmind v2 client and its error classification (429, 401, 406, 422, 404 …);
//! - `engine`: the dispatcher, the shared rate gate, poll scheduling, the downloader;
//! - `provenance`: the `ID.json` sidecar beside each video; `figures`: what every display of a
//!   campaign counts (money, ends), defined once; `progress`: the live display;
//! - `fake`: the fake Segmind server (API + video host) for demos and tests;
//! - `cmd`: the command line, one file per subcommand; `exit`: the one place an ending becomes an
//!   exit code; `logging`: the log set-up;
//! - `settings`: flags, environment, wanbatch.toml and the campaign's stored settings, resolved
//!   in one place;
//! - `bench`: the benchmarks (hidden subcommands); `pglocal`: a private PostgreSQL server for
//!   tests and benchmarks; `webdriver`: headless Chromium for the report's browser test and
//!   benchmark; `motolocal`: a private S3-compatible server (moto) for tests and benchmarks;
//! - `output`: videos streamed to object storage (`--out s3://…`, `gs://…`, `az://…`).

pub mod api;
pub mod bench;
pub mod clock;
pub mod cmd;
pub mod engine;
pub mod exit;
pub mod fake;
pub mod figures;
pub mod logging;
pub mod manifest;
pub mod motolocal;
pub mod mp4check;
pub mod output;
pub mod pglocal;
pub mod progress;
pub mod provenance;
pub mod settings;
pub mod state;
pub mod store;
pub mod webdriver;
