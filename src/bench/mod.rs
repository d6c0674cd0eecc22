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
//!   one campaign in PostgreSQL.

pub mod economy;
pub mod engine;
pub mod import;
pub mod report;
pub mod runners;
