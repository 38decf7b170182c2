//! How the worker shares the CPU with latency-sensitive processes on its
//! node: `--cpu-class`, the scheduling class of its threads, and
//! [`yield_to_waiting_threads`] between pieces of folding work.
//!
//! Set on the main thread before the async runtime starts, so that every
//! thread of the process inherits it (Linux threads inherit their
//! creator's policy and nice value). Uses the `thread-priority` crate: the
//! one maintained safe wrapper of `pthread_setschedparam`/`setpriority`
//! (rustix has no `sched_setscheduler`, and this workspace forbids unsafe
//! code).

use thread_priority::{ThreadPriority, ThreadSchedulePolicy};

use crate::CpuClass;

/// Offers the core to threads waiting for it (`sched_yield`), between two
/// pieces of folding work of about one entry each (a few hundred events,
/// around 0.1 ms).
///
/// Linux's EEVDF scheduler lets a running thread finish its slice (a few
/// milliseconds) before a thread it woke, such as ingest receiving a
/// batch or Redis answering an append, gets a busy core: a worker folding
/// for milliseconds at a time delays them by that much. Yielding after
/// each entry bounds that delay by one entry's work, at any `--cpu-class`
/// and in `testbed all` (where it yields to ingest's and query's own
/// threads). When nothing waits, the call returns at once (well under a
/// microsecond). At 150k events/s on two cores it took the batch-ack p99
/// from about 9 ms to about 6 (5.8–7.4 and 6.0–8.6 ms in two series of
/// three probes; `bench/README.md`, session 9).
pub fn yield_to_waiting_threads() {
    std::thread::yield_now();
}

/// Puts the calling thread, and the threads it starts afterwards, in
/// `class`. `Normal` changes nothing. Lowering a thread's class needs no
/// privilege; an error means the platform (or a seccomp profile) refused.
pub fn apply_to_this_thread(class: CpuClass) -> Result<(), String> {
    let Some(policy) = policy(class) else {
        return Ok(());
    };
    set(policy).map_err(|err| format!("cannot set --cpu-class {class:?}: {err:?}"))
}

#[cfg(target_os = "linux")]
fn policy(class: CpuClass) -> Option<ThreadSchedulePolicy> {
    use thread_priority::unix::NormalThreadSchedulePolicy as P;
    match class {
        CpuClass::Normal => None,
        CpuClass::Batch => Some(ThreadSchedulePolicy::Normal(P::Batch)),
        CpuClass::Idle => Some(ThreadSchedulePolicy::Normal(P::Idle)),
    }
}

#[cfg(not(target_os = "linux"))]
fn policy(class: CpuClass) -> Option<ThreadSchedulePolicy> {
    let _ = class;
    None
}

#[cfg(target_os = "linux")]
fn set(policy: ThreadSchedulePolicy) -> Result<(), thread_priority::Error> {
    // `Min`: nice 19 for SCHED_BATCH, 0 (the only value) for SCHED_IDLE.
    thread_priority::unix::set_thread_priority_and_policy(
        thread_priority::unix::thread_native_id(),
        ThreadPriority::Min,
        policy,
    )
}

#[cfg(not(target_os = "linux"))]
fn set(_: ThreadSchedulePolicy) -> Result<(), thread_priority::Error> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use thread_priority::unix::{NormalThreadSchedulePolicy as P, thread_schedule_policy};

    use super::*;

    /// The class is set on the calling thread and inherited by the threads
    /// it starts (as the runtime's threads are); `Normal` changes nothing.
    #[test]
    fn a_class_is_set_and_inherited() {
        for (class, expected) in [
            (CpuClass::Normal, P::Other),
            (CpuClass::Batch, P::Batch),
            (CpuClass::Idle, P::Idle),
        ] {
            let (own, child) = std::thread::spawn(move || {
                apply_to_this_thread(class).unwrap();
                let own = thread_schedule_policy().unwrap();
                let child = std::thread::spawn(|| thread_schedule_policy().unwrap())
                    .join()
                    .unwrap();
                (own, child)
            })
            .join()
            .unwrap();
            let want = ThreadSchedulePolicy::Normal(expected);
            assert_eq!((own, child), (want, want), "{class:?}");
        }
    }
}
