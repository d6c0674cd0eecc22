//! The benchmarks: subcommands hidden from the main `--help`, documented in
//! `docs/benchmarks.md`. They print figures; they are not tests.
//!
//! - `economy` (`wanbatch bench`): the request economy of the scheduler against an SDK-style
//!   poller, time-compressed against in-process fakes;
//! - `engine` (`wanbatch bench-engine`): the engine's own jobs per second and its memory against
//!   the queue's size, running the real binary as a child;
//! - `import` (`wanbatch bench-import`): import, status and export on large generated manifests;
//! - `report` (`wanbatch bench-report`): the review page of a 10,000-job campaign in headless Chromium;
//! - `runners` (`wanbatch bench-runners`): 1 runner, 3 runners on one key, 3 runners on 3 keys,
//!   one campaign in PostgreSQL;
//! - `s3` (`wanbatch bench-s3`): videos streamed to a local S3 server (moto): throughput, and peak
//!   RSS against the video's size.

pub mod economy;
pub mod engine;
pub mod import;
pub mod report;
pub mod runners;
pub mod s3;
