//! The thread pool the kernels share.
//!
//! Its size is `FERROGRAD_NUM_THREADS` (else `RAYON_NUM_THREADS`, else the number of
//! cores), read once when the pool is first used. A process forked after that (Python
//! `multiprocessing`) has no pool threads, so work in the child runs serially
//! instead of waiting forever on threads that do not exist.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

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

/// How long a team thread stays awake after its part of a call, waiting for the next
/// one: a learner's loop calls a kernel every few hundred µs, and waking a parked
/// thread costs tens of µs in a virtual machine (OpenBLAS's threads stay awake
/// longer). The first 50 µs spin, the rest yield the core between looks.
pub const TEAM_LINGER: Duration = Duration::from_millis(2);
const TEAM_SPIN: Duration = Duration::from_micros(50);

/// A call's parts as the team threads see them; lives on the caller's stack until
/// every thread it was posted to is done with it.
struct TeamJob {
    /// `part(i)`, its lifetime erased: the caller waits for `pending` to reach 0
    /// before the closure goes out of scope.
    part: *const (dyn Fn(usize) + Sync),
    parts: usize,
    /// The next part not yet claimed: every thread, the caller too, claims parts
    /// until none is left, so a thread the system keeps off its core (a busy
    /// machine) delays nobody but the parts it already claimed.
    next: AtomicUsize,
    /// Team threads posted the job and not yet done with it.
    pending: AtomicUsize,
    panic: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl TeamJob {
    /// Claims and runs parts until none is left; a part's panic is kept for the caller.
    fn run_parts(&self, part: &(dyn Fn(usize) + Sync)) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.parts {
                return;
            }
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| part(i))) {
                if let Ok(mut first) = self.panic.lock() {
                    first.get_or_insert(payload);
                }
            }
        }
    }
}

/// One team thread's mailbox.
struct TeamSlot {
    job: AtomicPtr<TeamJob>,
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
}

/// Threads for short parallel calls ([`split`]): unlike the rayon pool's, they stay
/// awake for [`TEAM_LINGER`] after each call, so back-to-back calls hand over work
/// in well under a microsecond.
struct Team {
    slots: Vec<&'static TeamSlot>,
    busy: AtomicBool,
    owner_pid: u32,
}

static TEAM: OnceLock<Team> = OnceLock::new();

fn team() -> Option<&'static Team> {
    let team = TEAM.get_or_init(|| {
        let helpers = configured_threads().saturating_sub(1);
        let mut slots = Vec::with_capacity(helpers);
        for k in 0..helpers {
            let slot: &'static TeamSlot = Box::leak(Box::new(TeamSlot {
                job: AtomicPtr::new(std::ptr::null_mut()),
                sleeping: AtomicBool::new(false),
                thread: OnceLock::new(),
            }));
            let spawned = std::thread::Builder::new()
                .name(format!("ferrograd-team-{k}"))
                .spawn(move || team_thread(slot));
            match spawned {
                Ok(handle) => {
                    let _ = slot.thread.set(handle.thread().clone());
                    slots.push(slot);
                }
                Err(_) => break,
            }
        }
        Team {
            slots,
            busy: AtomicBool::new(false),
            owner_pid: std::process::id(),
        }
    });
    (team.owner_pid == std::process::id() && !team.slots.is_empty()).then_some(team)
}

/// A team thread: waits for a job (spinning, then yielding, then parked), runs parts
/// of it, reports it done.
fn team_thread(slot: &'static TeamSlot) {
    loop {
        let job = wait_for_job(slot);
        // SAFETY: the caller of `split` keeps the job (and the closure it points to)
        // alive until `pending` reaches 0, which happens only below, after the last use.
        let job = unsafe { &*job };
        // SAFETY: as above, the closure outlives this call.
        job.run_parts(unsafe { &*job.part });
        job.pending.fetch_sub(1, Ordering::Release);
    }
}

/// The next job posted to `slot`: looked for in a spin for [`TEAM_SPIN`], then between
/// yields of the core until [`TEAM_LINGER`], then parked until a caller unparks it.
fn wait_for_job(slot: &TeamSlot) -> *mut TeamJob {
    let mut since = Instant::now();
    let mut looks = 0_u32;
    loop {
        let job = slot.job.swap(std::ptr::null_mut(), Ordering::Acquire);
        if !job.is_null() {
            return job;
        }
        looks = looks.wrapping_add(1);
        if looks % 64 != 0 {
            std::hint::spin_loop();
            continue;
        }
        let idle = since.elapsed();
        if idle < TEAM_SPIN {
            std::hint::spin_loop();
        } else if idle < TEAM_LINGER {
            std::thread::yield_now();
        } else {
            // Announce the sleep, then look once more: a job posted before the
            // announcement is seen here, one posted after it comes with an unpark.
            slot.sleeping.store(true, Ordering::SeqCst);
            if slot.job.load(Ordering::SeqCst).is_null() {
                std::thread::park();
            }
            slot.sleeping.store(false, Ordering::SeqCst);
            since = Instant::now();
        }
    }
}

/// Whether a [`split`] called now would run serially because the team is taken (by
/// another call, or by the split this code runs in).
pub fn team_taken() -> bool {
    team().is_some_and(|t| t.busy.load(Ordering::Acquire))
}

/// Threads a [`split`] may use now: 1 + the team's threads (1 in a forked child).
pub fn team_threads() -> usize {
    team().map_or(1, |t| t.slots.len() + 1)
}

/// Runs `part(i)` for every i in 0..parts and returns when all are done, the calling
/// thread and the team's threads each claiming the next part until none is left.
/// Serial when the team is busy with another call (another Python thread, or a
/// `split` inside a part), inside a rayon loop (whose threads are busy), in a forked
/// child, or with one thread configured. A panic in any part is raised here after
/// every part has finished.
pub fn split(parts: usize, part: &(dyn Fn(usize) + Sync)) {
    let claimed = team().filter(|t| {
        parts > 1
            && rayon::current_thread_index().is_none()
            && t.busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    });
    let Some(team) = claimed else {
        (0..parts).for_each(part);
        return;
    };
    struct Release<'t>(&'t AtomicBool);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _release = Release(&team.busy);
    let slots = &team.slots[..(parts - 1).min(team.slots.len())];
    // SAFETY (lifetime erasure): the job lives until every thread it is posted to
    // has finished with it: `Wait` below waits for that, on return and unwinding alike.
    let erased: *const (dyn Fn(usize) + Sync + 'static) = unsafe {
        std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), _>(std::ptr::from_ref(part))
    };
    let job = TeamJob {
        part: erased,
        parts,
        next: AtomicUsize::new(0),
        pending: AtomicUsize::new(slots.len()),
        panic: std::sync::Mutex::new(None),
    };
    let ptr = std::ptr::from_ref(&job).cast_mut();
    struct Wait<'j>(&'j TeamJob, &'j [&'static TeamSlot], *mut TeamJob);
    impl Drop for Wait<'_> {
        fn drop(&mut self) {
            let Wait(job, slots, ptr) = *self;
            // A thread that has not picked the job up yet never will: take it back.
            for slot in slots {
                let back = slot.job.compare_exchange(
                    ptr,
                    std::ptr::null_mut(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                if back.is_ok() {
                    job.pending.fetch_sub(1, Ordering::Release);
                }
            }
            let mut spins = 0_u32;
            while job.pending.load(Ordering::Acquire) != 0 {
                spins = spins.wrapping_add(1);
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
    let wait = Wait(&job, slots, ptr);
    for slot in slots {
        slot.job.store(ptr, Ordering::SeqCst);
        if slot.sleeping.load(Ordering::SeqCst) {
            if let Some(thread) = slot.thread.get() {
                thread.unpark();
            }
        }
    }
    job.run_parts(part);
    drop(wait);
    let payload = job.panic.lock().ok().and_then(|mut p| p.take());
    if let Some(payload) = payload {
        resume_unwind(payload);
    }
}

/// Runs `f(item)` for every item, spread over [`split`]'s threads (the caller takes
/// the first).
pub fn split_items<I: Send>(items: Vec<I>, f: impl Fn(I) + Sync) {
    let slots: Vec<std::sync::Mutex<Option<I>>> = items
        .into_iter()
        .map(|i| std::sync::Mutex::new(Some(i)))
        .collect();
    split(slots.len(), &|k| {
        let item = slots[k].lock().ok().and_then(|mut s| s.take());
        if let Some(item) = item {
            f(item);
        }
    });
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

    /// Every part runs exactly once, on the caller and the team, for any count of
    /// parts, also nested (the inner split runs serially) and from several threads.
    #[test]
    fn split_runs_every_part_once() {
        for parts in [0, 1, 2, 3, 7] {
            let counts: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            split(parts, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                split(2, &|_| {
                    counts[i].fetch_add(10, Ordering::Relaxed);
                });
            });
            assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 21));
        }
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        split(2, &|i| {
                            total.fetch_add(i + 1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.into_inner(), 4 * 500 * 3);
    }

    /// A panic in a team thread's part reaches the caller after every part is done,
    /// and the team serves the next call.
    #[test]
    fn split_raises_a_part_panic_and_recovers() {
        let done = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            split(2, &|i| {
                if i == 1 {
                    panic!("part 1");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(caught.is_err());
        assert_eq!(done.into_inner(), 1);
        let after = AtomicUsize::new(0);
        split(2, &|_| {
            after.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(after.into_inner(), 2);
    }

    /// Calls after the team fell asleep still run (the sleeping thread is woken).
    #[test]
    fn split_wakes_a_parked_team() {
        split(2, &|_| {});
        std::thread::sleep(TEAM_LINGER * 3);
        let n = AtomicUsize::new(0);
        split(2, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.into_inner(), 2);
    }
}
