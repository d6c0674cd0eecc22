//! A small W3C WebDriver client driving headless Chromium through `chromedriver`, for the report's
//! browser test and `wanbatch bench-report` (not used by the other commands).
//!
//! `find` locates the two programs (`WANBATCH_CHROMIUM` / `WANBATCH_CHROMEDRIVER`, else Debian's
//! `/usr/lib/chromium/`, else PATH); `for_tests` applies the skip policy: neither found → the test
//! says it skipped, unless `WANBATCH_REQUIRE_CHROMIUM=1` (CI), then it fails. `Browser::start`
//! runs chromedriver on a free loopback port and opens one session of headless Chromium
//! (`--headless=new`, `--no-sandbox`, autoplay allowed, downloads into a given folder); its
//! methods speak the WebDriver HTTP API with `reqwest`.
//!
//! Owns: chromedriver and every process it starts (Chromium and its helpers), and a temporary
//! profile folder. No process outlives the `Browser`: `quit` ends the session politely, and
//! `Drop` (also on panic) freezes then kills chromedriver and all its descendants by pid.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// When `1`, a missing Chromium or chromedriver fails the tests instead of skipping them.
pub const REQUIRE_ENV: &str = "WANBATCH_REQUIRE_CHROMIUM";

/// The two programs.
#[derive(Debug, Clone)]
pub struct Programs {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Finds Chromium and chromedriver, or says which is missing.
pub fn find() -> std::result::Result<Programs, String> {
    let chromium = locate(
        "WANBATCH_CHROMIUM",
        // Debian's /usr/bin/chromium is a shell wrapper; the browser itself is here.
        &["/usr/lib/chromium/chromium"],
        &["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"],
    );
    let chromedriver = locate(
        "WANBATCH_CHROMEDRIVER",
        &["/usr/lib/chromium/chromedriver"],
        &["chromedriver"],
    );
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Ok(Programs { chromium, chromedriver }),
        (c, d) => Err(format!(
            "{} not found (Debian/Ubuntu: apt-get install chromium chromium-driver; .ci/run installs them)",
            [c.is_none().then_some("chromium"), d.is_none().then_some("chromedriver")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

fn locate(env: &str, fixed: &[&str], names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        // Named explicitly: used only if it is there.
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    if let Some(p) = fixed.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// The programs for a test, or `None` (after saying so) when it must be skipped. Panics when
/// they are missing and `WANBATCH_REQUIRE_CHROMIUM=1`.
pub fn for_tests(test: &str) -> Option<Programs> {
    let required = std::env::var(REQUIRE_ENV).as_deref() == Ok("1");
    match policy(find(), required) {
        Ok(Some(p)) => Some(p),
        Ok(None) => {
            eprintln!("skipped {test}: {}", find().err().unwrap_or_default());
            None
        }
        Err(why) => panic!("{test}: {why}"),
    }
}

/// The skip policy: found → run; missing → skip, or fail when required.
fn policy(
    found: std::result::Result<Programs, String>,
    required: bool,
) -> std::result::Result<Option<Programs>, String> {
    match found {
        Ok(p) => Ok(Some(p)),
        Err(why) if required => Err(format!("{why}, and {REQUIRE_ENV}=1 requires them")),
        Err(_) => Ok(None),
    }
}

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where downloads land (created if missing).
    pub downloads: PathBuf,
    pub width: u32,
    pub height: u32,
}

/// One headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start(programs: &Programs, opts: &Options) -> Result<Browser> {
        std::fs::create_dir_all(&opts.downloads)
            .with_context(|| format!("cannot create {}", opts.downloads.display()))?;
        let profile = tempfile::Builder::new().prefix("wanbatch-chromium-").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log"))?;
        use std::os::unix::process::CommandExt;
        let driver = std::process::Command::new(&programs.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", programs.chromedriver.display()))?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        let mut b = Browser {
            http,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            driver,
            _profile: profile,
        };
        b.wait_ready().await?;
        let profile_dir = b._profile.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": programs.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--autoplay-policy=no-user-gesture-required",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--mute-audio",
                    "--disable-crash-reporter",
                    "--disable-breakpad",
                    format!("--window-size={},{}", opts.width, opts.height),
                    format!("--user-data-dir={}", profile_dir.display()),
                ],
                "prefs": {
                    "download.default_directory": opts.downloads,
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        }}});
        let v = b.call(reqwest::Method::POST, "/session", Some(caps)).await?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {v}"))?
            .to_string();
        b.cmd("timeouts", json!({"script": 60_000, "pageLoad": 60_000})).await?;
        Ok(b)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.driver.try_wait()? {
                bail!("chromedriver exited ({status}): {}", self.driver_log());
            }
            if let Ok(r) = self.http.get(format!("{}/status", self.base)).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver not ready within 20 s: {}", self.driver_log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of chromedriver's log, for error messages.
    pub fn driver_log(&self) -> String {
        let text = std::fs::read_to_string(self._profile.path().join("chromedriver.log")).unwrap_or_default();
        let mut start = text.len().saturating_sub(2000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.with_context(|| format!("WebDriver {path}"))?;
        let status = r.status();
        let v: Value = r.json().await.with_context(|| format!("WebDriver {path}: not JSON"))?;
        if !status.is_success() {
            bail!(
                "WebDriver {path}: {status}: {} {}",
                v["value"]["error"],
                v["value"]["message"].as_str().unwrap_or_default()
            );
        }
        Ok(v["value"].clone())
    }

    async fn cmd(&self, what: &str, body: Value) -> Result<Value> {
        let path = format!("/session/{}/{what}", self.session);
        self.call(reqwest::Method::POST, &path, Some(body)).await
    }

    /// Opens `url` and waits for its load event.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.cmd("url", json!({ "url": url })).await.map(|_| ())
    }

    /// Runs `script` (a function body: `return …`) in the page with `args`.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd("execute/sync", json!({"script": script, "args": args})).await
    }

    /// Runs `script` with a callback as its last argument (`arguments[arguments.length - 1]`)
    /// and returns what it was called with.
    pub async fn eval_async(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd("execute/async", json!({"script": script, "args": args})).await
    }

    /// The WebDriver id of the first element matching the CSS selector.
    async fn element(&self, css: &str) -> Result<String> {
        let e = self
            .cmd("element", json!({"using": "css selector", "value": css}))
            .await
            .with_context(|| format!("no element {css}"))?;
        e.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no element id in {e}"))
    }

    /// Clicks the first element matching the CSS selector, as a user would.
    pub async fn click(&self, css: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.cmd(&format!("element/{id}/click"), json!({})).await.map(|_| ())
    }

    /// Types `text` into the first element matching the CSS selector, as a user would.
    pub async fn type_text(&self, css: &str, text: &str) -> Result<()> {
        let id = self.element(css).await?;
        self.cmd(&format!("element/{id}/value"), json!({ "text": text }))
            .await
            .map(|_| ())
    }

    /// Polls `condition` (a script returning a value) until it is truthy; returns that value.
    pub async fn wait_for(&self, what: &str, condition: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(condition, vec![]).await?;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what} (last: {v})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Ends the session (closing Chromium), then stops chromedriver.
    pub async fn quit(mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.call(reqwest::Method::DELETE, &path, None)).await;
            self.session.clear();
        }
        // Drop kills whatever is left.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_tree(self.driver.id() as i32);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Stops (SIGSTOP) `root`'s descendants until no new one appears — a stopped process cannot
/// fork — then kills them all and `root` (SIGKILL). Processes are found by parent pid in /proc.
fn kill_tree(root: i32) {
    let mut found: Vec<i32> = Vec::new();
    for _ in 0..20 {
        let now = descendants(root);
        let new: Vec<i32> = now.iter().copied().filter(|p| !found.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            // SAFETY: kill(2) on a pid just read from /proc as a descendant of our child.
            unsafe {
                libc::kill(p, libc::SIGSTOP);
            }
        }
        found.extend(new);
    }
    for &p in found.iter().chain(std::iter::once(&root)) {
        // SAFETY: as above.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

/// Every process below `root` (by parent pid).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|s| s.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// A `file://` URL for an absolute path (each byte outside the unreserved set percent-encoded).
pub fn file_url(path: &Path) -> String {
    let mut o = String::from("file://");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            o.push(*b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_skip_unless_required() {
        let found = || {
            Ok(Programs {
                chromium: "/c".into(),
                chromedriver: "/d".into(),
            })
        };
        assert!(policy(found(), false).unwrap().is_some());
        assert!(policy(found(), true).unwrap().is_some());
        assert!(policy(Err("chromedriver not found".into()), false).unwrap().is_none());
        let e = policy(Err("chromedriver not found".into()), true).unwrap_err();
        assert!(
            e.contains("chromedriver not found") && e.contains("WANBATCH_REQUIRE_CHROMIUM=1"),
            "{e}"
        );
    }

    #[test]
    fn file_urls_encode_what_a_path_may_hold() {
        assert_eq!(file_url(Path::new("/tmp/a b/r#1.html")), "file:///tmp/a%20b/r%231.html");
    }

    #[test]
    fn descendants_are_found_by_parent_pid() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let me = std::process::id() as i32;
        assert!(descendants(me).contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
