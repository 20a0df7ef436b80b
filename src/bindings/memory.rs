//! The C allocator's settings for array-sized blocks.
//!
//! glibc hands out blocks above its mmap threshold (dynamic, 128 kB to 32 MB) as fresh
//! mappings and returns free memory at the top of the heap to the system beyond a trim
//! threshold. A learner's loop frees and allocates the same few arrays of up to tens
//! of MB every step (a 10,000-row test pass through hidden layers of 100 units makes
//! 8 MB arrays), so every step paid for page faults and zero-filling of memory it had
//! just given back: a third of ch06/overfit_dropout.py's time went to the kernel.
//! At import the native module sets the mmap threshold to 32 MB and the trim threshold
//! to 128 MB, so such arrays come from (and go back to) the heap; at most 128 MB of
//! free memory stays with the process. `FERROGRAD_MALLOC=system` leaves the
//! allocator as it is.

use std::os::raw::c_int;

/// The environment variable that turns the tuning off (`system`).
pub const ENV: &str = "FERROGRAD_MALLOC";

/// Blocks up to this size come from the heap.
pub const MMAP_THRESHOLD: c_int = 32 << 20;

/// Free memory kept at the top of the heap before it is returned to the system.
pub const TRIM_THRESHOLD: c_int = 128 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;

    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub const M_TRIM_THRESHOLD: c_int = -1;
    pub const M_MMAP_THRESHOLD: c_int = -3;
}

/// Applies the settings unless `FERROGRAD_MALLOC=system`; whether they are in force
/// (false off glibc).
pub fn tune_allocator() -> bool {
    if std::env::var(ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("system")) {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation parameters (under its own
        // lock); both parameters are documented for it and the values are in range.
        unsafe {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && glibc::mallopt(glibc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
