//! The OIP endpoint's connections between requests. One thread holds, in one poll(2) set,
//! every connection without a whole request head: new ones, kept-alive ones between requests,
//! heads arriving a byte at a time. A connection goes to a worker thread only once its head is
//! whole, and comes back when its request has been answered. Slow and idle clients so cost a
//! socket and a buffer each, not a thread, and never take a worker from a request that has
//! arrived (issue 18: 70 connections trickling a head held every thread of the endpoint).
//!
//! Limits, from `OipConfig`: a head must arrive whole within `head_time` (408 and closed
//! otherwise); connections that have not presented the host's token (on a host without one:
//! not yet sent a whole request) are bounded apart from those that have (`max_waiting`,
//! `max_kept`): past either bound the oldest of that kind is closed, so a newcomer always gets
//! in and nobody without the token can crowd out a device that has it; requests served at
//! once by `max_conns` (past it a request waits up to `WORKER_WAIT` for a worker, then 503).
//! Memory: a connection buffers at most `MAX_HEAD` and one 16 KiB read.

use super::oip::OipConfig;
use crate::link::Stream;
use crate::oip::http::{parse_request_head, HttpError, RequestHead, Wire};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest the poller sleeps (how soon it sees `stop`).
const TICK: Duration = Duration::from_millis(250);
/// How long a closing connection's remaining bytes are read and dropped, so that the client
/// reads our answer instead of a reset (closing a socket with unread bytes resets it).
const LINGER: Duration = Duration::from_secs(1);
/// A worker's socket read timeout: how often a `Wire` looks at its deadline and `stop`.
const WORKER_POLL: Duration = Duration::from_millis(250);
/// How long a whole request waits for a worker when `max_conns` are in service, before 503:
/// a slot is free only once its worker has handed its connection back, a moment after the
/// client has read the answer.
const WORKER_WAIT: Duration = Duration::from_secs(1);
/// How often connections closed for the limits are summed up in the log.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What becomes of a connection after a worker has served a request on it.
pub(super) enum After {
    /// Kept alive for its next request; `proven` when this one carried the host's token (or
    /// the host needs none).
    Keep { proven: bool },
    /// Answered, the rest of the request unread: closed once the client has had `LINGER` to
    /// read the answer.
    Drain,
    /// Closed at once.
    Close,
}

/// What the poller needs from the endpoint.
pub(super) trait Serve: Sync {
    /// Serves the request whose head is `head`, on a worker thread: `wire` holds the bytes
    /// read past the head, `started` is when the head's first byte came.
    fn request(&self, wire: &mut Wire, head: RequestHead, started: Instant, peer: SocketAddr) -> After;
    /// A whole error reply that closes the connection, for what the poller answers itself.
    fn refusal(&self, status: u16, why: &str) -> Vec<u8>;
    /// The connections the endpoint holds now (waiting, closing, with a worker or waiting for
    /// one), told at every turn of the poller.
    fn connections(&self, _open: usize) {}
}

/// A connection the endpoint holds.
struct Conn {
    sock: Arc<TcpStream>,
    peer: SocketAddr,
    /// Bytes of its next request read so far.
    buf: Vec<u8>,
    /// It has presented the host's token (or, on a host without one, sent a whole request).
    proven: bool,
    state: State,
}

#[derive(Clone, Copy)]
enum State {
    /// Waiting for a request head: the wait began at `since` (connected, or last answered);
    /// `started` when the head's first byte came.
    Waiting { since: Instant, started: Option<Instant> },
    /// Answered and closing; what the client still sends is dropped until `until`.
    Draining { until: Instant },
}

/// A request whose head has arrived, for a worker.
struct Job {
    conn: Conn,
    head: RequestHead,
    started: Instant,
}

/// A connection's socket as a link `Stream`, for a worker's `Wire`, while the `Conn` keeps it.
struct Shared(Arc<TcpStream>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Shared {
    fn set_read_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.0.set_read_timeout(t)
    }
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(Shared(self.0.clone())))
    }
}

/// Serves `listener` until `stop`: the poller on this thread, requests on up to
/// `cfg.max_conns` worker threads (started as needed, kept for the next request).
pub(super) fn run(
    listener: TcpListener,
    cfg: &OipConfig,
    stop: &Arc<AtomicBool>,
    serve: &impl Serve,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    raise_open_file_limit(cfg);
    // Workers wake the poller through this pair when they hand a connection back.
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let jobs_rx = Mutex::new(jobs_rx);
    let (done_tx, done_rx) = mpsc::channel::<(Conn, After)>();
    std::thread::scope(|s| {
        let spawn = || {
            let (jobs, done, wake) = (&jobs_rx, done_tx.clone(), &wake_tx);
            std::thread::Builder::new()
                .name("oip-worker".into())
                .spawn_scoped(s, move || work(jobs, done, wake, serve, cfg, stop))
                .map(drop)
        };
        let mut poller = Poller {
            cfg,
            serve,
            conns: Vec::new(),
            busy: 0,
            workers: 0,
            queue: VecDeque::new(),
            jobs: jobs_tx,
            spawn: &spawn,
            accept_paused_until: None,
            shed: Shed::default(),
        };
        // Dropping the poller (its `jobs` sender) ends the workers once their requests are done.
        poller.run(&listener, &wake_rx, &done_rx, stop)
    })
}

/// A worker: serves requests from `jobs` until the poller is gone, handing each connection back.
fn work(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    done: mpsc::Sender<(Conn, After)>,
    wake: &UnixStream,
    serve: &impl Serve,
    cfg: &OipConfig,
    stop: &Arc<AtomicBool>,
) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(Job { mut conn, head, started }) = job else { return };
        let after = serve_one(&mut conn, head, started, serve, cfg, stop);
        if done.send((conn, after)).is_err() {
            return;
        }
        // A full wake pipe already wakes the poller.
        let _ = (&*wake).write(&[1]);
    }
}

/// One request on a blocking socket with timeouts (a `Wire` polls them up to its deadlines);
/// the socket goes back to non-blocking for the poller.
fn serve_one(
    conn: &mut Conn,
    head: RequestHead,
    started: Instant,
    serve: &impl Serve,
    cfg: &OipConfig,
    stop: &Arc<AtomicBool>,
) -> After {
    let sock = &conn.sock;
    let ready = sock
        .set_nonblocking(false)
        .and_then(|_| sock.set_read_timeout(Some(WORKER_POLL)))
        .and_then(|_| sock.set_write_timeout(Some(cfg.request_time)));
    if let Err(e) = ready {
        log::warn!("oip {}: cannot set up the socket: {e}", conn.peer);
        return After::Close;
    }
    let buffered = std::mem::take(&mut conn.buf);
    let mut wire = Wire::new(Box::new(Shared(sock.clone()))).with_buffered(buffered).with_stop(stop.clone());
    // A bug in serving one request must not take a worker (and its slot) for good.
    let after =
        catch_unwind(AssertUnwindSafe(|| serve.request(&mut wire, head, started, conn.peer))).unwrap_or_else(|_| {
            log::error!("oip {}: serving a request panicked; connection closed", conn.peer);
            After::Close
        });
    conn.buf = wire.take_buffered();
    if !matches!(after, After::Close) && sock.set_nonblocking(true).is_err() {
        return After::Close;
    }
    after
}

/// Connections closed for the endpoint's limits since the last report.
#[derive(Default)]
struct Shed {
    late: u64,
    evicted: u64,
    busy: u64,
    since: Option<Instant>,
}

struct Poller<'a, S: Serve> {
    cfg: &'a OipConfig,
    serve: &'a S,
    /// Every connection without a whole request head, or closing.
    conns: Vec<Conn>,
    /// Connections with a worker now, and workers started.
    busy: usize,
    workers: usize,
    /// Whole requests waiting for a worker (at most `max_conns`), each until its instant.
    queue: VecDeque<(Job, Instant)>,
    jobs: mpsc::Sender<Job>,
    spawn: &'a dyn Fn() -> io::Result<()>,
    /// Out of file descriptors: accepting waits until then.
    accept_paused_until: Option<Instant>,
    shed: Shed,
}

impl<S: Serve> Poller<'_, S> {
    fn run(
        &mut self,
        listener: &TcpListener,
        wake: &UnixStream,
        done: &mpsc::Receiver<(Conn, After)>,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.expire(now);
            self.report(now);
            self.serve.connections(self.conns.len() + self.busy + self.queue.len());
            let queued = self.queue.front().map(|(_, until)| *until);
            let next = self.conns.iter().map(|c| self.deadline(c)).chain(queued).min();
            let wait = next.map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            let accepting = self.accept_paused_until.is_none_or(|t| now >= t);
            // The poll set: the listener, the workers' wake socket, then every connection in order.
            fds.clear();
            fds.push(pollfd(listener.as_raw_fd(), if accepting { libc::POLLIN } else { 0 }));
            fds.push(pollfd(wake.as_raw_fd(), libc::POLLIN));
            fds.extend(self.conns.iter().map(|c| pollfd(c.sock.as_raw_fd(), libc::POLLIN)));
            let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: `fds` is a live, initialised array of `fds.len()` pollfd structs.
            if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Backwards: taking one out moves only a later one into its place.
            for i in (0..fds.len() - 2).rev() {
                if fds[i + 2].revents != 0 {
                    let conn = self.conns.swap_remove(i);
                    if let Some(conn) = self.on_readable(conn) {
                        self.conns.push(conn);
                    }
                }
            }
            if fds[1].revents != 0 {
                let mut sink = [0u8; 256];
                while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
            }
            while let Ok((conn, after)) = done.try_recv() {
                self.busy -= 1;
                if let Some(conn) = self.queue.pop_front().and_then(|(job, _)| self.start(job)) {
                    self.conns.push(conn);
                }
                self.on_returned(conn, after);
            }
            if accepting && fds[0].revents != 0 {
                self.accept(listener);
            }
        }
        Ok(())
    }

    /// When `c` is closed if nothing happens: a connection that has presented the token waits
    /// `idle` for its next request, then has `head_time` for the head from its first byte; one
    /// that has not has `head_time` for its whole head from the moment its wait began.
    fn deadline(&self, c: &Conn) -> Instant {
        match c.state {
            State::Draining { until } => until,
            State::Waiting { started: Some(first), .. } if c.proven => first + self.cfg.head_time,
            State::Waiting { since, .. } if c.proven => since + self.cfg.idle,
            State::Waiting { since, .. } => since + self.cfg.head_time,
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.queue.front().is_some_and(|(_, until)| *until <= now) {
            let (job, _) = self.queue.pop_front().expect("a queued request");
            let max = self.cfg.max_conns;
            self.shed.busy += 1;
            log::debug!("oip {}: {} {}: 503, no worker free in time", job.conn.peer, job.head.method, job.head.target);
            if let Some(conn) =
                self.refuse(job.conn, 503, &format!("the host serves {max} requests at once; try again"))
            {
                self.conns.push(conn);
            }
        }
        for i in (0..self.conns.len()).rev() {
            if self.deadline(&self.conns[i]) > now {
                continue;
            }
            let conn = self.conns.swap_remove(i);
            match conn.state {
                State::Draining { .. } => {}
                State::Waiting { .. } if conn.buf.is_empty() => {
                    log::debug!("oip {}: idle past its time, closed", conn.peer)
                }
                State::Waiting { .. } => {
                    self.shed.late += 1;
                    let why = format!("the request head did not arrive whole within {:?}", self.cfg.head_time);
                    log::debug!("oip {}: 408 {why}", conn.peer);
                    if let Some(conn) = self.refuse(conn, 408, &why) {
                        self.conns.push(conn);
                    }
                }
            }
        }
    }

    /// Reads what has come on `conn`; gives it back unless it was closed or went to a worker.
    fn on_readable(&mut self, mut conn: Conn) -> Option<Conn> {
        let mut chunk = [0u8; 16 << 10];
        let n = match (&*conn.sock).read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Some(conn),
            Err(_) => return None,
        };
        match &mut conn.state {
            State::Draining { .. } => Some(conn),
            State::Waiting { started, .. } => {
                started.get_or_insert_with(Instant::now);
                conn.buf.extend_from_slice(&chunk[..n]);
                self.advance(conn)
            }
        }
    }

    /// A waiting connection with new bytes: to a worker once its head is whole, refused when
    /// the head is malformed or too long, else back to waiting.
    fn advance(&mut self, mut conn: Conn) -> Option<Conn> {
        let State::Waiting { since, started } = conn.state else { return Some(conn) };
        if conn.buf.is_empty() {
            return Some(conn);
        }
        match parse_request_head(&conn.buf) {
            Ok(None) => Some(conn),
            Ok(Some((head, n))) => {
                conn.buf.drain(..n);
                self.dispatch(conn, head, started.unwrap_or(since))
            }
            Err(e) => {
                let status = if matches!(e, HttpError::TooLarge(_)) { 431 } else { 400 };
                log::warn!("oip {}: {status} {e}", conn.peer);
                self.refuse(conn, status, &e.to_string())
            }
        }
    }

    /// Hands a request to a worker; with `max_conns` in service it waits for one up to
    /// `WORKER_WAIT` (503 then, or at once when as many wait already).
    fn dispatch(&mut self, conn: Conn, head: RequestHead, started: Instant) -> Option<Conn> {
        let max = self.cfg.max_conns;
        let job = Job { conn, head, started };
        if self.busy < max {
            return self.start(job);
        }
        if self.queue.len() < max {
            self.queue.push_back((job, Instant::now() + WORKER_WAIT));
            return None;
        }
        self.shed.busy += 1;
        log::debug!(
            "oip {}: {} {}: 503, serving {max} requests already",
            job.conn.peer,
            job.head.method,
            job.head.target
        );
        self.refuse(job.conn, 503, &format!("the host serves {max} requests at once; try again"))
    }

    /// Gives a request to a free worker, starting one if none is free.
    fn start(&mut self, job: Job) -> Option<Conn> {
        if self.workers == self.busy {
            if let Err(e) = (self.spawn)() {
                log::warn!("oip {}: cannot start a worker thread: {e}", job.conn.peer);
                return self.refuse(job.conn, 503, "the host cannot start another worker now; try again");
            }
            self.workers += 1;
        }
        match self.jobs.send(job) {
            Ok(()) => self.busy += 1,
            Err(mpsc::SendError(job)) => log::warn!("oip {}: no worker to serve the request", job.conn.peer),
        }
        None
    }

    /// Answers `status` without waiting (the reply is small and the socket's buffer empty; if
    /// it does not fit at once the connection is just closed), then drains and closes.
    fn refuse(&mut self, conn: Conn, status: u16, why: &str) -> Option<Conn> {
        let reply = self.serve.refusal(status, why);
        match (&*conn.sock).write(&reply) {
            Ok(n) if n == reply.len() => Some(self.draining(conn)),
            _ => None,
        }
    }

    /// Closes our side and reads on for `LINGER`.
    fn draining(&self, mut conn: Conn) -> Conn {
        let _ = conn.sock.shutdown(Shutdown::Write);
        conn.buf = Vec::new();
        conn.state = State::Draining { until: Instant::now() + LINGER };
        conn
    }

    /// A connection a worker is done with.
    fn on_returned(&mut self, mut conn: Conn, after: After) {
        match after {
            After::Close => {}
            After::Drain => {
                let conn = self.draining(conn);
                self.conns.push(conn);
            }
            After::Keep { proven } => {
                conn.proven |= proven;
                let now = Instant::now();
                // A next request already begun (read along with the last one) has started.
                conn.state = State::Waiting { since: now, started: (!conn.buf.is_empty()).then_some(now) };
                self.make_room(conn.proven);
                if let Some(conn) = self.advance(conn) {
                    self.conns.push(conn);
                }
            }
        }
    }

    fn accept(&mut self, listener: &TcpListener) {
        // A bounded number per round, so that a flood of connections leaves time for the rest.
        for _ in 0..1024 {
            match listener.accept() {
                Ok((sock, peer)) => {
                    if let Err(e) = sock.set_nonblocking(true).and_then(|_| sock.set_nodelay(true)) {
                        log::warn!("oip {peer}: cannot set up the socket: {e}");
                        continue;
                    }
                    self.make_room(false);
                    let state = State::Waiting { since: Instant::now(), started: None };
                    self.conns.push(Conn { sock: Arc::new(sock), peer, buf: Vec::new(), proven: false, state });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of file descriptors: close the oldest connection without the token, or
                    // leave newcomers in the listen queue for a moment.
                    if !self.evict(false) {
                        log::warn!("oip: cannot accept a connection: {e}");
                        self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    }
                    return;
                }
                Err(e) => log::debug!("oip: accept failed: {e}"),
            }
        }
    }

    /// Makes room for one more connection of its kind (`proven` or not) within its bound.
    fn make_room(&mut self, proven: bool) {
        let max = if proven { self.cfg.max_kept } else { self.cfg.max_waiting };
        let held = self.conns.iter().filter(|c| c.proven == proven).count();
        for _ in max.max(1) - 1..held {
            self.evict(proven);
        }
    }

    /// Closes one connection of its kind: a closing one, else the one idle longest, else the
    /// one whose head began first. False when there is none.
    fn evict(&mut self, proven: bool) -> bool {
        let victim =
            self.conns.iter().enumerate().filter(|(_, c)| c.proven == proven).min_by_key(|(_, c)| match c.state {
                State::Draining { until } => (0, until),
                State::Waiting { since, started: None } => (1, since),
                State::Waiting { started: Some(first), .. } => (2, first),
            });
        let Some((i, _)) = victim else { return false };
        let conn = self.conns.swap_remove(i);
        if let State::Waiting { .. } = conn.state {
            self.shed.evicted += 1;
            log::debug!("oip {}: closed to make room for a newer connection", conn.peer);
            if !conn.buf.is_empty() {
                // Best effort: the client may be in the middle of sending its head.
                let why = "too many connections are waiting to send a request; try again";
                let _ = (&*conn.sock).write(&self.serve.refusal(503, why));
            }
        }
        true
    }

    /// Every `REPORT_EVERY`, one warning for the connections closed for the limits, rather than
    /// one line each (a slow-client attack would flood the log).
    fn report(&mut self, now: Instant) {
        let since = *self.shed.since.get_or_insert(now);
        if now < since + REPORT_EVERY {
            return;
        }
        let s = std::mem::take(&mut self.shed);
        self.shed.since = Some(now);
        if s.late + s.evicted + s.busy > 0 {
            log::warn!(
                "oip: in the last {:.0?}: {} heads not whole within {:?} (408), {} connections closed to make room \
                 for newer ones ({} without the token, {} with it at most), {} requests refused with all {} workers busy (503)",
                now - since,
                s.late,
                self.cfg.head_time,
                s.evicted,
                self.cfg.max_waiting,
                self.cfg.max_kept,
                s.busy,
                self.cfg.max_conns
            );
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// Raises the process's soft limit on open files to its hard limit, and warns when even that
/// is below the connections the endpoint may hold (accepting then waits for one to close).
fn raise_open_file_limit(cfg: &OipConfig) {
    let want = (cfg.max_waiting + cfg.max_kept + cfg.max_conns + 64) as libc::rlim_t;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        // (Linux refuses more than its nr_open, 2^20 by default, even when the hard limit is
        // unlimited.)
        let target = lim.rlim_max.min(1 << 20);
        if lim.rlim_cur < target {
            let was = lim.rlim_cur;
            lim.rlim_cur = target;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                lim.rlim_cur = was;
            }
        }
        lim.rlim_cur
    };
    if soft < want {
        log::warn!(
            "oip: the open-file limit is {soft}, the endpoint may hold {want} connections: raise it (ulimit -n, \
             systemd's LimitNOFILE=) or the newest connections wait"
        );
    }
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
