//! tract's thread pool (`--threads`) as the int8 ops use it: how many threads it has, when a
//! product is worth splitting, and running a whole inference inside it.

use tract_linalg::multithread::{current_tract_executor, multithread_tract_scope, Executor};

/// A product on a forced kernel (not measured) is split between threads from this many
/// multiply-accumulates up; measured ones are split where that measured faster.
pub const SPLIT_MACS: usize = 4 << 20;

/// How many threads tract's pool has (1 without one).
pub fn pool_threads() -> usize {
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

/// Runs `f` with every product on the calling thread, whatever `--threads` says: for callers
/// that spread their inputs over the cores themselves (`eval`, `calibrate`'s logits).
pub fn single_threaded<T>(f: impl FnOnce() -> T) -> T {
    multithread_tract_scope(Executor::SingleThread, f)
}

/// Runs `f` on a thread of tract's pool when `--threads` made one: the ops that split their
/// work between threads then run one part on this very thread and hand the other to a pool
/// thread that is awake, rather than waking threads from outside the pool and waiting idle.
///
/// One caller at a time runs in the pool: tract's matrix products keep their scratch space in
/// a thread-local cell for the whole product, and a pool thread that waits inside one
/// inference's split would otherwise pick up a second caller's whole inference and borrow that
/// cell again (a panic, then an abort: the host serving several devices with `--threads 2`
/// did). The others wait their turn; each inference has every thread of the pool anyway.
pub fn in_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => {
            if pool.current_thread_index().is_some() {
                return f(); // already inside: the caller holds the turn
            }
            let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // The pool's threads see the caller's executor (it may be a scoped one, not the
            // default), so the ops inside split as the caller asked.
            let exec = Executor::MultiThread(pool.clone());
            pool.install(move || multithread_tract_scope(exec, f))
        }
        _ => f(),
    }
}
