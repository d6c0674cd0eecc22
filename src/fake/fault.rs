//! Injected failures: a [`Fault`] applies to the next `count` requests matching its target.
//! The queue itself lives in the shared state; `respond::with_fault` applies a kind.

/// An injected failure, applied to the next `count` requests matching `target`.
///
/// JSON form (admin route): `{"target":"Submit","kind":{"Status":502},"count":1}`,
/// `{"target":"Download","kind":"Drop","count":2}`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Fault {
    pub target: FaultTarget,
    pub kind: FaultKind,
    pub count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum FaultTarget {
    Submit,
    Status,
    Result,
    /// CDN video downloads (not asset GETs: those are Segmind's own fetches).
    Download,
    /// Request history, list and by id.
    History,
    /// `POST /upload-asset`.
    Upload,
    /// Matches Submit, Status and Result: the v2 endpoints only, so that a test of the job
    /// loop is not disturbed by the side calls (history, upload) and vice versa.
    AnyApi,
}

impl FaultTarget {
    pub(super) fn matches(self, actual: FaultTarget) -> bool {
        use FaultTarget::*;
        self == actual || (self == AnyApi && matches!(actual, Submit | Status | Result))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum FaultKind {
    /// Answer this status with a small JSON error body; nothing is processed (no job on
    /// Submit, no asset on Upload).
    Status(u16),
    /// Process normally (Submit: the job is created; Upload: the assets are stored), but
    /// answer this status instead of 200.
    AcceptThenStatus(u16),
    /// Send headers, then abort the body; nothing is processed.
    Drop,
    /// Process normally (the job is created, the assets stored), then break the connection
    /// mid-body.
    AcceptThenDrop,
    /// Answer normally after this many ms (nothing is processed before: a client that goes
    /// away meanwhile leaves no job).
    Delay(u64),
    /// Process normally at once (the job is created, the assets stored), then hold the answer
    /// this many ms: a client killed meanwhile paid for a job it never heard of.
    AcceptThenDelay(u64),
    /// Send the full Content-Length but abort after this many bytes (at most length-1).
    Truncate(u64),
}
