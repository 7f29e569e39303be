//! A TCP chaos proxy for fault tests, after the idea of crates.io's test
//! `ChaosProxy`: it listens on a free port of its own and forwards every
//! connection to one upstream (PostgreSQL, Redis), and a test can, while
//! traffic flows,
//!
//! - [`ChaosProxy::cut`]: reset every open connection and refuse new ones
//!   (accepted, then reset at once: what a client sees when the server's
//!   host is up and the service is not);
//! - [`ChaosProxy::blackhole`]: reset every open connection and hold new
//!   ones silent (a partition: a connect "succeeds" and then nothing ever
//!   answers), until the restore, when they are forwarded as a healed
//!   network would;
//! - [`ChaosProxy::delay`]: add latency to every chunk, each way, without
//!   limiting throughput (a chunk read at t is written at t + latency, in
//!   order);
//! - [`ChaosProxy::restore`]: forward normally again, without delay;
//! - [`ChaosProxy::trap`]: cut only the connection on which the client
//!   next sends a given pattern (`COMMIT`), at the moment that matters:
//!   before it is forwarded, after the upstream has answered it (the
//!   answer lost), or leaving the upstream's end open and silent (a
//!   partition its server does not notice). Patterns are seen only in
//!   plaintext: a PostgreSQL client must connect with `sslmode=disable`.
//!
//! Plain threads and blocking sockets: four threads per connection (a reader
//! and a writer each way), which is nothing for a test's few connections
//! and keeps every step easy to follow.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Refuse,
    Blackhole,
}

/// When a [`ChaosProxy::trap`] springs, on the connection whose client
/// sent the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    /// Both ends are reset; what carried the pattern never reaches the
    /// upstream.
    Drop,
    /// What carried the pattern is forwarded; the upstream's answer is
    /// dropped and both ends reset.
    LoseAnswer,
    /// The client's end is reset; the upstream's end stays open and hears
    /// nothing more, neither the pattern nor that the client is gone.
    Strand,
}

pub struct ChaosProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    stopping: AtomicBool,
    state: Mutex<State>,
    accepted: AtomicU64,
    refused: AtomicU64,
    sprung: AtomicU64,
}

struct State {
    mode: Mode,
    latency: Duration,
    /// Both ends of every forwarded connection, to be shut down by a cut.
    open: Vec<(u64, TcpStream, TcpStream)>,
    /// Connections accepted during a black hole, not yet forwarded.
    held: Vec<TcpStream>,
    /// Upstream ends left open by a [`Trap::Strand`].
    stranded: Vec<TcpStream>,
    trap: Option<(Vec<u8>, Trap)>,
    next_id: u64,
}

/// One forwarded connection, as both of its pumps see it.
struct Link {
    client: TcpStream,
    upstream: TcpStream,
    /// A [`Trap::LoseAnswer`] sprang: the upstream's next chunk is dropped.
    doomed: AtomicBool,
    /// A [`Trap::Strand`] sprang: the upstream's end must not be closed.
    stranded: AtomicBool,
}

impl ChaosProxy {
    /// Starts forwarding from a free port of 127.0.0.1 to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the chaos proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            stopping: AtomicBool::new(false),
            state: Mutex::new(State {
                mode: Mode::Forward,
                latency: Duration::ZERO,
                open: Vec::new(),
                held: Vec::new(),
                stranded: Vec::new(),
                trap: None,
                next_id: 0,
            }),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            sprung: AtomicU64::new(0),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("chaos-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("proxy thread")
        };
        Self { addr, shared, accept: Some(accept) }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resets every open connection; refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.break_with(Mode::Refuse);
    }

    /// Resets every open connection; holds new ones silent until
    /// [`Self::restore`], which forwards them.
    pub fn blackhole(&self) {
        self.break_with(Mode::Blackhole);
    }

    fn break_with(&self, mode: Mode) {
        let open = {
            let mut state = self.shared.lock();
            state.mode = mode;
            std::mem::take(&mut state.open)
        };
        for (_, client, upstream) in open {
            reset(&client);
            reset(&upstream);
        }
    }

    /// Adds `latency` to every chunk from now on, each way, on open
    /// connections and new ones alike; `Duration::ZERO` removes it.
    pub fn delay(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Forwards normally again: no delay, new connections accepted, held
    /// ones forwarded.
    pub fn restore(&self) {
        let held = {
            let mut state = self.shared.lock();
            state.mode = Mode::Forward;
            state.latency = Duration::ZERO;
            std::mem::take(&mut state.held)
        };
        for client in held {
            let shared = self.shared.clone();
            std::thread::spawn(move || forward(&shared, client));
        }
    }

    /// Arms a one-shot trap: the next chunk a client sends that contains
    /// `pattern` springs it, on that connection only (new connections are
    /// forwarded as before).
    pub fn trap(&self, pattern: &[u8], trap: Trap) {
        self.shared.lock().trap = Some((pattern.to_vec(), trap));
    }

    /// Traps sprung so far.
    pub fn sprung(&self) -> u64 {
        self.shared.sprung.load(Ordering::SeqCst)
    }

    pub fn mode(&self) -> Mode {
        self.shared.lock().mode
    }

    /// Connections accepted so far (refused and held ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused so far (during cuts).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Connections forwarded and still open.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().open.len()
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let (open, held, stranded) = {
            let mut state = self.shared.lock();
            let open = std::mem::take(&mut state.open);
            (open, std::mem::take(&mut state.held), std::mem::take(&mut state.stranded))
        };
        for (_, client, upstream) in open {
            reset(&client);
            reset(&upstream);
        }
        for stream in held.iter().chain(&stranded) {
            reset(stream);
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let mode = {
            let mut state = shared.lock();
            if state.mode == Mode::Blackhole {
                state.held.push(client);
                continue;
            }
            state.mode
        };
        match mode {
            Mode::Refuse => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                reset(&client);
            }
            _ => {
                let shared = shared.clone();
                std::thread::spawn(move || forward(&shared, client));
            }
        }
    }
}

/// Connects `client` to the upstream and pumps both ways until either side
/// closes or a cut shuts both down.
fn forward(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone());
    let (Ok(client2), Ok(upstream2), Ok(client3), Ok(upstream3)) = clones else {
        reset(&client);
        reset(&upstream);
        return;
    };
    let id = {
        let mut state = shared.lock();
        // A cut may have come while this one was connecting.
        if state.mode != Mode::Forward {
            drop(state);
            reset(&client);
            reset(&upstream);
            return;
        }
        state.next_id += 1;
        let id = state.next_id;
        state.open.push((id, client3, upstream3));
        id
    };
    let link = Arc::new(Link {
        client: client2,
        upstream: upstream2,
        doomed: AtomicBool::new(false),
        stranded: AtomicBool::new(false),
    });
    let (Ok(from_client), Ok(to_client)) = (client.try_clone(), upstream.try_clone()) else { return };
    let up = {
        let (shared, link) = (shared.clone(), link.clone());
        std::thread::spawn(move || pump(&shared, &link, from_client, to_client, true))
    };
    pump(shared, &link, upstream, client, false);
    let _ = up.join();
    shared.lock().open.retain(|(open, _, _)| *open != id);
}

/// Copies `from` → `to` (`up`: client → upstream), each chunk delayed by
/// the latency of the moment it was read; a writer thread keeps the order
/// and the pace. Traps are looked for here.
fn pump(shared: &Arc<Shared>, link: &Arc<Link>, mut from: TcpStream, mut to: TcpStream, up: bool) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let link = link.clone();
        std::thread::spawn(move || {
            for (at, chunk) in due {
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            // A stranded upstream end must not even hear a FIN.
            if !(up && link.stranded.load(Ordering::SeqCst)) {
                let _ = to.shutdown(Shutdown::Write);
            }
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if up {
            match spring(shared, chunk) {
                Some(Trap::Drop) => {
                    reset(&link.client);
                    reset(&link.upstream);
                    break;
                }
                Some(Trap::Strand) => {
                    link.stranded.store(true, Ordering::SeqCst);
                    if let Ok(upstream) = link.upstream.try_clone() {
                        shared.lock().stranded.push(upstream);
                    }
                    reset(&link.client);
                    break;
                }
                Some(Trap::LoseAnswer) => link.doomed.store(true, Ordering::SeqCst),
                None => {}
            }
        } else if link.doomed.load(Ordering::SeqCst) {
            reset(&link.client);
            reset(&link.upstream);
            break;
        }
        let latency = shared.lock().latency;
        if chunks.send((Instant::now() + latency, chunk.to_vec())).is_err() {
            break;
        }
    }
    drop(chunks);
    let _ = writer.join();
}

/// Takes the armed trap if `chunk` carries its pattern.
fn spring(shared: &Shared, chunk: &[u8]) -> Option<Trap> {
    let mut state = shared.lock();
    let (pattern, _) = state.trap.as_ref()?;
    if pattern.is_empty() || !chunk.windows(pattern.len()).any(|w| w == pattern.as_slice()) {
        return None;
    }
    let (_, trap) = state.trap.take()?;
    shared.sprung.fetch_add(1, Ordering::SeqCst);
    Some(trap)
}

/// Closes with a reset (SO_LINGER 0), so the peer sees the connection cut,
/// not a polite end of stream; both directions are shut at once, so that
/// nothing still queued in the proxy passes after a cut.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Both);
}
