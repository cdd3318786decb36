//! Dynamic batching for the host, after Triton's dynamic batcher: requests from every
//! connection (TCP link or OIP endpoint) queue here, and one worker runs them through the
//! model in batches of at most `max_batch`, waiting at most `max_wait` after the first
//! request of a batch for others to join. The queue is bounded: when it is full a request is
//! refused at once (the caller answers "busy"), so memory stays bounded however many devices
//! send.
//!
//! The worker is generic over the function that runs a batch, so tests drive it without a
//! model. It keeps the host's `Metrics` of what it does: the queue's depth, each input's wait
//! in it, each batch's size and time.

use super::metrics::{Metrics, Stage};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the batcher groups requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchConfig {
    /// The largest batch run at once.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
    /// Requests waiting at most; more are refused as busy.
    pub max_queue: usize,
    /// Workers taking batches from the queue, each running one batch at a time (Triton's
    /// model instances): with batches that do not pay, more than one keeps every core busy.
    pub workers: usize,
    /// Form batches only as large as the model runs an input faster in (timed at start);
    /// false: up to `max_batch` whatever they cost (to measure them).
    pub only_if_faster: bool,
}

impl BatchConfig {
    pub fn new(max_batch: usize, max_wait: Duration) -> BatchConfig {
        let max_batch = max_batch.max(1);
        BatchConfig { max_batch, max_wait, max_queue: (max_batch * 8).max(64), workers: 1, only_if_faster: true }
    }
}

/// Why a request got no output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the host is busy: {0} requests are already waiting")]
    Busy(usize),
    #[error("the host is shutting down")]
    Closed,
    #[error("{0}")]
    Run(String),
}

/// What the batcher has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub batches: u64,
    pub requests: u64,
    pub largest: usize,
    pub refused_busy: u64,
}

impl BatchStats {
    pub fn mean_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.requests as f64 / self.batches as f64
        }
    }
}

struct Job {
    input: Vec<f32>,
    queued: Instant,
    reply: SyncSender<Result<Vec<f32>, BatchError>>,
}

/// A running batcher. Dropping it lets the worker finish the queue and stop.
pub struct Batcher {
    cfg: BatchConfig,
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    stats: Arc<Mutex<BatchStats>>,
    metrics: Arc<Metrics>,
}

/// Runs one batch: one output per input, or an error for the whole batch.
pub type RunBatch = dyn Fn(&[&[f32]]) -> Result<Vec<Vec<f32>>, String> + Send + Sync;

impl Batcher {
    /// Starts the worker threads over `run`.
    pub fn start(cfg: BatchConfig, run: Arc<RunBatch>) -> Batcher {
        Batcher::start_counted(cfg, run, Arc::default())
    }

    /// Starts the worker threads over `run`, counting into `metrics`.
    pub fn start_counted(cfg: BatchConfig, run: Arc<RunBatch>, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.max_queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(Mutex::new(BatchStats::default()));
        let workers = (0..cfg.workers.max(1))
            .map(|i| {
                let (rx, run, stats, metrics) = (rx.clone(), run.clone(), stats.clone(), metrics.clone());
                std::thread::Builder::new()
                    .name(format!("batcher-{i}"))
                    .spawn(move || work(cfg, &rx, &*run, &stats, &metrics))
                    .expect("cannot start a batcher thread")
            })
            .collect();
        Batcher { cfg, tx: Some(tx), workers, stats, metrics }
    }

    pub fn config(&self) -> BatchConfig {
        self.cfg
    }

    pub fn stats(&self) -> BatchStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Queues several inputs together (e.g. an OIP request with a batch of its own) and waits
    /// for their outputs, in order.
    pub fn run_all(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, BatchError> {
        let tx = self.tx.as_ref().ok_or(BatchError::Closed)?;
        let mut waits = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (reply, rx) = mpsc::sync_channel(1);
            // Counted before it is sent, so that a worker taking it at once never counts below 0.
            self.metrics.queue_depth.add(1);
            let sent = tx.try_send(Job { input, reply, queued: Instant::now() });
            if sent.is_err() {
                self.metrics.queue_depth.add(-1);
            }
            match sent {
                Ok(()) => waits.push(rx),
                Err(TrySendError::Full(_)) => {
                    if let Ok(mut s) = self.stats.lock() {
                        s.refused_busy += 1;
                    }
                    // Those already queued still run; their answers are dropped with `waits`.
                    return Err(BatchError::Busy(self.cfg.max_queue));
                }
                Err(TrySendError::Disconnected(_)) => return Err(BatchError::Closed),
            }
        }
        waits.into_iter().map(|rx| rx.recv().unwrap_or(Err(BatchError::Closed))).collect()
    }

    /// Queues one input and waits for its output.
    pub fn run(&self, input: Vec<f32>) -> Result<Vec<f32>, BatchError> {
        self.run_all(vec![input]).map(|mut v| v.pop().unwrap_or_default())
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// One worker: takes a batch from the queue (holding the queue only while it gathers), runs
/// it, answers each request; until every sender is gone.
fn work(cfg: BatchConfig, rx: &Mutex<Receiver<Job>>, run: &RunBatch, stats: &Mutex<BatchStats>, metrics: &Metrics) {
    loop {
        let jobs = {
            let Ok(rx) = rx.lock() else { return };
            let Ok(first) = rx.recv() else { return };
            gather(&cfg, &rx, first)
        };
        let start = Instant::now();
        metrics.queue_depth.add(-(jobs.len() as i64));
        for j in &jobs {
            metrics.stage(Stage::QueueWait, start.saturating_duration_since(j.queued));
        }
        let inputs: Vec<&[f32]> = jobs.iter().map(|j| j.input.as_slice()).collect();
        let outcome = run(&inputs);
        metrics.executed(jobs.len(), start.elapsed());
        if let Ok(mut s) = stats.lock() {
            s.batches += 1;
            s.requests += jobs.len() as u64;
            s.largest = s.largest.max(jobs.len());
        }
        match outcome {
            Ok(outs) if outs.len() == jobs.len() => {
                for (job, out) in jobs.into_iter().zip(outs) {
                    let _ = job.reply.send(Ok(out));
                }
            }
            Ok(outs) => {
                let why = format!("a batch of {} inputs gave {} outputs", jobs.len(), outs.len());
                for job in jobs {
                    let _ = job.reply.send(Err(BatchError::Run(why.clone())));
                }
            }
            Err(why) => {
                for job in jobs {
                    let _ = job.reply.send(Err(BatchError::Run(why.clone())));
                }
            }
        }
    }
}

/// The requests that join `first` in its batch: whatever is queued at once, then whatever
/// arrives within `max_wait`, up to `max_batch`.
fn gather(cfg: &BatchConfig, rx: &Receiver<Job>, first: Job) -> Vec<Job> {
    let mut jobs = vec![first];
    let deadline = Instant::now() + cfg.max_wait;
    while jobs.len() < cfg.max_batch {
        match rx.try_recv() {
            Ok(j) => {
                jobs.push(j);
                continue;
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(j) => jobs.push(j),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A "model" that doubles every value and records the batch sizes it saw.
    fn doubling(sizes: Arc<Mutex<Vec<usize>>>, delay: Duration) -> Arc<RunBatch> {
        Arc::new(move |inputs: &[&[f32]]| {
            sizes.lock().unwrap().push(inputs.len());
            std::thread::sleep(delay);
            Ok(inputs.iter().map(|i| i.iter().map(|v| v * 2.0).collect()).collect())
        })
    }

    #[test]
    fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(Batcher::start(
            BatchConfig::new(8, Duration::from_millis(50)),
            doubling(sizes.clone(), Duration::from_millis(20)),
        ));
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || (i, b.run(vec![i as f32, 1.0]).unwrap()))
            })
            .collect();
        for h in handles {
            let (i, out) = h.join().unwrap();
            assert_eq!(out, vec![2.0 * i as f32, 2.0]);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 16);
        assert!(sizes.iter().all(|&s| s <= 8), "{sizes:?}");
        assert!(sizes.len() < 16, "16 concurrent requests ran one by one: {sizes:?}");
        let st = b.stats();
        assert_eq!((st.requests, st.batches as usize), (16, sizes.len()));
    }

    #[test]
    fn the_metrics_count_each_batch_each_inputs_wait_and_an_empty_queue_after() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(Metrics::default());
        let b = Arc::new(Batcher::start_counted(
            BatchConfig::new(4, Duration::from_millis(20)),
            doubling(sizes.clone(), Duration::from_millis(5)),
            metrics.clone(),
        ));
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || b.run(vec![i as f32]).unwrap())
            })
            .collect();
        handles.into_iter().for_each(|h| drop(h.join().unwrap()));
        let batches = sizes.lock().unwrap().len() as u64;
        assert_eq!(metrics.counts(), (10, batches));
        assert_eq!(metrics.queue_depth.get(), 0);
        let text = metrics.render();
        assert!(text.contains("edgecascade_stage_seconds_count{stage=\"queue_wait\"} 10\n"), "{text}");
        assert!(text.contains(&format!("edgecascade_stage_seconds_count{{stage=\"infer\"}} {batches}\n")), "{text}");
    }

    #[test]
    fn several_workers_run_batches_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (r, m) = (running.clone(), most.clone());
        let run: Arc<RunBatch> = Arc::new(move |inputs: &[&[f32]]| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(inputs.iter().map(|i| i.to_vec()).collect())
        });
        let mut cfg = BatchConfig::new(1, Duration::ZERO);
        cfg.workers = 2;
        let b = Arc::new(Batcher::start(cfg, run));
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || b.run(vec![i as f32]).unwrap() == vec![i as f32])
            })
            .collect();
        assert!(handles.into_iter().all(|h| h.join().unwrap()));
        assert_eq!(most.load(Ordering::SeqCst), 2, "two workers should overlap, never more");
    }

    #[test]
    fn a_lone_request_waits_at_most_max_wait() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Batcher::start(BatchConfig::new(64, Duration::from_millis(30)), doubling(sizes, Duration::ZERO));
        let t = Instant::now();
        assert_eq!(b.run(vec![1.5]).unwrap(), vec![3.0]);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let (g, s) = (gate.clone(), started.clone());
        let run: Arc<RunBatch> = Arc::new(move |inputs: &[&[f32]]| {
            s.fetch_add(1, Ordering::SeqCst);
            let _wait = g.lock().unwrap();
            Ok(inputs.iter().map(|i| i.to_vec()).collect())
        });
        let cfg = BatchConfig { max_queue: 2, ..BatchConfig::new(1, Duration::ZERO) };
        let b = Arc::new(Batcher::start(cfg, run));
        // One request runs (held at the gate) ...
        let b0 = b.clone();
        let first = std::thread::spawn(move || b0.run(vec![0.0]));
        while started.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // ... two fill the queue ...
        let mut replies = Vec::new();
        for v in 1..=2 {
            let (reply, rx) = mpsc::sync_channel(1);
            b.tx.as_ref().unwrap().try_send(Job { input: vec![v as f32], reply, queued: Instant::now() }).unwrap();
            replies.push(rx);
        }
        // ... and the next is refused at once, not queued.
        assert_eq!(b.run(vec![9.0]), Err(BatchError::Busy(2)));
        assert_eq!(b.stats().refused_busy, 1);
        drop(held);
        assert_eq!(first.join().unwrap(), Ok(vec![0.0]));
        for (i, rx) in replies.into_iter().enumerate() {
            assert_eq!(rx.recv().unwrap(), Ok(vec![(i + 1) as f32]));
        }
    }

    #[test]
    fn a_failed_batch_fails_each_of_its_requests_and_the_batcher_goes_on() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let run: Arc<RunBatch> = Arc::new(move |inputs: &[&[f32]]| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("model failed".into())
            } else {
                Ok(inputs.iter().map(|i| i.to_vec()).collect())
            }
        });
        let b = Batcher::start(BatchConfig::new(4, Duration::ZERO), run);
        assert_eq!(b.run(vec![1.0]), Err(BatchError::Run("model failed".into())));
        assert_eq!(b.run(vec![2.0]), Ok(vec![2.0]));
    }
}
