//! The thread pool the kernels share.
//!
//! Its size is `FERROGRAD_NUM_THREADS` (else `RAYON_NUM_THREADS`, else the number of
//! cores), read once when the pool is first used. A process forked after that (Python
//! `multiprocessing`) has no pool threads, so work in the child runs serially
//! instead of waiting forever on threads that do not exist.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The environment variable that sets the number of kernel threads.
pub const THREADS_ENV: &str = "FERROGRAD_NUM_THREADS";

struct Pool {
    pool: Option<ThreadPool>,
    owner_pid: u32,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Most threads per core the pool starts: more only adds switching (and 100 000
/// threads would take minutes to start).
pub const MAX_THREADS_PER_CORE: usize = 4;

/// The pool's size: the first of `FERROGRAD_NUM_THREADS`, `RAYON_NUM_THREADS` that is a
/// positive integer, else the number of cores; at most [`MAX_THREADS_PER_CORE`] per core.
pub fn configured_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    [THREADS_ENV, "RAYON_NUM_THREADS"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(cores)
        .min(cores.saturating_mul(MAX_THREADS_PER_CORE))
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

/// `rayon::join(a, b)` for parts too short to sleep between: whichever side finishes
/// first spins until the other is done, so neither thread falls asleep and has to be
/// woken for the next join (in a virtual machine a wake-up can cost more than the
/// part itself). `a` spins only when `b` has started on another thread: a `b` that no
/// thread took runs after `a` on this one, as with `rayon::join`.
pub fn join_spinning<RA: Send, RB: Send>(
    a: impl FnOnce() -> RA + Send,
    b: impl FnOnce() -> RB + Send,
) -> (RA, RB) {
    let (a_done, b_started, b_done) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    rayon::join(
        || {
            let r = a();
            a_done.store(true, Ordering::Release);
            if b_started.load(Ordering::Acquire) {
                wait_for(&b_done);
            }
            r
        },
        || {
            b_started.store(true, Ordering::Release);
            let r = b();
            b_done.store(true, Ordering::Release);
            wait_for(&a_done);
            r
        },
    )
}

/// Spins until `flag` is set, yielding the core now and then in case the thread that
/// sets it was preempted.
fn wait_for(flag: &AtomicBool) {
    let mut spins = 0_u32;
    while !flag.load(Ordering::Acquire) {
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Both results come back whether `b` is taken by the other thread or left to the
    /// caller (a pool of one thread never steals it: `a` must not wait for it).
    #[test]
    fn join_spinning_returns_both_sides_with_one_or_two_threads(
    ) -> Result<(), rayon::ThreadPoolBuildError> {
        for threads in [1, 2] {
            let pool = ThreadPoolBuilder::new().num_threads(threads).build()?;
            pool.install(|| {
                for i in 0..2000_u64 {
                    let (a, b) = join_spinning(|| i * 2, || (0..i % 50).sum::<u64>());
                    assert_eq!((a, b), (i * 2, (0..i % 50).sum::<u64>()));
                }
            });
        }
        Ok(())
    }

    /// Called from outside any pool (rayon's global pool runs it), each side once.
    #[test]
    fn join_spinning_outside_a_pool() {
        let (a, b) = (AtomicUsize::new(0), AtomicUsize::new(0));
        join_spinning(
            || a.fetch_add(1, Ordering::Relaxed),
            || b.fetch_add(1, Ordering::Relaxed),
        );
        assert_eq!((a.into_inner(), b.into_inner()), (1, 1));
    }
}
