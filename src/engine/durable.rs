//! Group durability for downloaded files: a video and its sidecar are written and renamed into
//! place without an fsync each, then made durable together with every other download that
//! finished meanwhile, by one `syncfs` of the output folder's filesystem, before any of those
//! jobs is recorded `done`.
//!
//! The order that makes a crash (or a power loss) safe is unchanged: the files are on disk
//! before the database says so. Only the cost is shared: per file, an fsync of the file and one
//! of its folder forced a journal commit each (four per job with the sidecar); one `syncfs`
//! commits a whole group. Like the store's group commit (`store/batch.rs`): the first caller
//! syncs for everyone waiting; callers that arrive during its sync are served by the next one.
//!
//! `syncfs` is Linux's; elsewhere each caller fsyncs its own files and folder. (Linux reports
//! a writeback error of the filesystem to `syncfs` since 5.8; before that only to `fsync`.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Syncer {
    state: Mutex<State>,
    synced_now: Notify,
}

#[derive(Default)]
struct State {
    /// Tickets handed out: a caller's files were complete when it took its ticket.
    requested: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A sync is under way.
    running: bool,
    /// Syncs run (for tests and figures).
    syncs: u64,
}

impl Syncer {
    /// Returns once `files` (written and renamed into `dir`) and `dir` itself are durable.
    pub async fn sync(&self, dir: &Path, files: &[PathBuf]) -> std::io::Result<()> {
        if !cfg!(target_os = "linux") {
            let (dir, files) = (dir.to_path_buf(), files.to_vec());
            return blocking(move || {
                for f in &files {
                    std::fs::File::open(f)?.sync_all()?;
                }
                std::fs::File::open(&dir)?.sync_all()
            })
            .await;
        }
        let ticket = {
            let mut s = self.state.lock().expect("syncer lock");
            s.requested += 1;
            s.requested
        };
        loop {
            // Registered before the state is read, so a sync that ends in between still wakes us.
            let woken = self.synced_now.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let lead = {
                let mut s = self.state.lock().expect("syncer lock");
                if s.synced >= ticket {
                    return Ok(());
                }
                if s.running {
                    None
                } else {
                    s.running = true;
                    s.syncs += 1;
                    Some(s.requested)
                }
            };
            let Some(upto) = lead else {
                woken.await;
                continue;
            };
            let d = dir.to_path_buf();
            let r = blocking(move || syncfs(&d)).await;
            {
                let mut s = self.state.lock().expect("syncer lock");
                s.running = false;
                if r.is_ok() {
                    s.synced = s.synced.max(upto);
                }
            }
            // On an error the others try again themselves (and see their own error).
            self.synced_now.notify_waiters();
            return r;
        }
    }

    /// How many syncs ran.
    pub fn syncs(&self) -> u64 {
        self.state.lock().expect("syncer lock").syncs
    }
}

async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> std::io::Result<()> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
}

/// `syncfs(2)` of the filesystem holding `dir`.
#[cfg(target_os = "linux")]
pub(crate) fn syncfs(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir)?;
    // SAFETY: a valid open descriptor for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn syncfs(_dir: &Path) -> std::io::Result<()> {
    unreachable!("syncfs is only used on Linux")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_wait_together_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Arc::new(Syncer::default());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let (s, d) = (syncer.clone(), dir.path().to_path_buf());
            tasks.spawn(async move {
                let f = d.join(format!("f{i}"));
                std::fs::write(&f, b"x").unwrap();
                s.sync(&d, &[f]).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        let syncs = syncer.syncs();
        if cfg!(target_os = "linux") {
            assert!((1..64).contains(&syncs), "64 callers, {syncs} syncs");
        }
    }

    #[tokio::test]
    async fn an_error_reaches_the_caller() {
        let syncer = Syncer::default();
        let gone = Path::new("/nonexistent/wanbatch-syncer-test");
        assert!(syncer.sync(gone, &[gone.join("f")]).await.is_err());
        // And the next caller syncs again instead of trusting the failed sync.
        let dir = tempfile::tempdir().unwrap();
        syncer.sync(dir.path(), &[]).await.unwrap();
    }
}
