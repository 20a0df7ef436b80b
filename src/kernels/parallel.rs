//! The thread pool the kernels share.
//!
//! Its size is `FERROGRAD_NUM_THREADS` (else `RAYON_NUM_THREADS`, else the number of
//! cores), read once when the pool is first used. A process forked after that (Python
//! `multiprocessing`) has no pool threads, so work in the child runs serially
//! instead of waiting forever on threads that do not exist.

use std::sync::OnceLock;

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The environment variable that sets the number of kernel threads.
pub const THREADS_ENV: &str = "FERROGRAD_NUM_THREADS";

struct Pool {
    pool: Option<ThreadPool>,
    owner_pid: u32,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn configured_threads() -> usize {
    [THREADS_ENV, "RAYON_NUM_THREADS"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let threads = configured_threads();
        let pool = if threads > 1 {
            ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("ferrograd-{i}"))
                .build()
                .ok()
        } else {
            None
        };
        Pool {
            pool,
            owner_pid: std::process::id(),
        }
    })
}

/// The pool, unless it is serial or this process is a fork of the one that built it.
fn usable_pool() -> Option<&'static ThreadPool> {
    let p = pool();
    if p.owner_pid != std::process::id() {
        return None;
    }
    p.pool.as_ref()
}

/// Number of threads kernels may use here (1 in a forked child).
pub fn num_threads() -> usize {
    usable_pool().map_or(1, ThreadPool::current_num_threads)
}

/// Runs `f` inside the kernel pool when parallel work is possible; `f` gets the number
/// of threads it may use (1 means: stay serial, do not touch rayon).
pub fn install<R: Send>(f: impl FnOnce(usize) -> R + Send) -> R {
    match usable_pool() {
        Some(pool) => pool.install(|| f(pool.current_num_threads())),
        None => f(1),
    }
}

/// Runs `f` on the calling thread with a scope whose spawned jobs run on the pool, so
/// the caller can do its own share meanwhile; `f` gets the number of threads (the
/// caller counts as one of them) and no scope where work must stay serial.
pub fn in_place_scope<'s, R>(f: impl FnOnce(Option<&rayon::Scope<'s>>, usize) -> R) -> R {
    match usable_pool() {
        Some(pool) => {
            let threads = pool.current_num_threads();
            pool.in_place_scope(|scope| f(Some(scope), threads))
        }
        None => f(None, 1),
    }
}
