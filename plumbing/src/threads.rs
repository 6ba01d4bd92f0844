//! Work split between scoped threads, for the server's reads of a whole fleet (the
//! status files, the ranges of a long log): how many threads can run, and one way to
//! map items on them that keeps their order and raises a worker's panic again in the
//! caller, so no caller repeats the spawn-and-join lines.

/// How many threads can run at once here (cgroup quotas included), asked once: std
/// reads /proc and the cgroup files each time.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// What a scoped thread returned; its panic, raised again here.
pub fn rejoin<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// `f` of every item, in order: one scoped thread for each `per` items (the last
/// batch on this thread).
pub fn map<T: Sync, R: Send>(items: &[T], per: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let f = &f;
    let batch = move |b: &[T]| b.iter().map(f).collect::<Vec<R>>();
    let mut batches = items.chunks(per.max(1));
    let Some(last) = batches.next_back() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = batches.map(|b| s.spawn(move || batch(b))).collect();
        let last = batch(last);
        let mut out: Vec<R> = workers.into_iter().flat_map(rejoin).collect();
        out.extend(last);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_order_whatever_the_batches() {
        let items: Vec<u32> = (0..103).collect();
        for per in [0, 1, 7, 50, 103, 1000] {
            let out = map(&items, per, |n| n * 2);
            assert_eq!(
                out,
                items.iter().map(|n| n * 2).collect::<Vec<_>>(),
                "per {}",
                per
            );
        }
        assert!(map(&[] as &[u32], 4, |n| *n).is_empty());
    }

    #[test]
    #[should_panic(expected = "item 5")]
    fn a_worker_panic_is_raised_in_the_caller() {
        let items: Vec<u32> = (0..10).collect();
        map(&items, 2, |n| {
            assert!(*n != 5, "item 5");
            *n
        });
    }
}
