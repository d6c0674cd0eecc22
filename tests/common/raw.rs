//! A hostile HTTP/1.1 server on a raw TCP socket: it answers whatever bytes a test scripts,
//! including what no well-behaved framework would send (bodies that never end, lying lengths,
//! endless redirects). It records every request head it gets; dropping it stops everything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What to send back for one request.
pub enum Reply {
    /// These bytes (a whole response), then close.
    Raw(Vec<u8>),
    /// Status line and headers, then this body chunked, for ever.
    Endless { head: Vec<u8>, chunk: Vec<u8> },
    /// Status line and headers, then one byte every `every`, for ever.
    Trickle { head: Vec<u8>, every: Duration },
}

/// A whole response: status, headers, a body with its true Content-Length, `Connection: close`.
pub fn http(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = head(status, headers);
    out.truncate(out.len() - 2);
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// A status line and headers (the caller adds any length or encoding header), ending the head.
pub fn head(status: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn json(status: u16, body: &str) -> Reply {
    Reply::Raw(http(status, &[("content-type", "application/json")], body.as_bytes()))
}

type Script = dyn Fn(&str) -> Reply + Send + Sync;

pub struct RawServer {
    pub url: String,
    /// Request heads (request line and headers), in arrival order.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// Body bytes written by endless and trickling replies, all connections together.
    pub streamed: Arc<AtomicU64>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawServer {
    /// Listens on 127.0.0.1:0; `script` gets each request head and says what to answer.
    pub async fn start(script: impl Fn(&str) -> Reply + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (h, s, c) = (heads.clone(), streamed.clone(), connections.clone());
        let task = tokio::spawn(async move {
            // Connection tasks live in this set, so they end when the server is dropped.
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(sock, script.clone(), h.clone(), s.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        RawServer {
            url,
            heads,
            streamed,
            connections,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn streamed(&self) -> u64 {
        self.streamed.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut sock: TcpStream, script: Arc<Script>, heads: Arc<Mutex<Vec<String>>>, streamed: Arc<AtomicU64>) {
    // Read the head (bounded), then the body by Content-Length.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 16 {
            return;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head_text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head_text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - end;
    while have < len {
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    heads.lock().unwrap().push(head_text.clone());
    match script(&head_text) {
        Reply::Raw(bytes) => {
            let _ = sock.write_all(&bytes).await;
            let _ = sock.shutdown().await;
        }
        Reply::Endless { head, chunk } => {
            if sock.write_all(&head).await.is_err() {
                return;
            }
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            while sock.write_all(&framed).await.is_ok() {
                streamed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        Reply::Trickle { head, every } => {
            if sock.write_all(&head).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(every).await;
                if sock.write_all(b"x").await.is_err() || sock.flush().await.is_err() {
                    return;
                }
                streamed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}
