//! Hypotheses in parallel on scoped threads, with results in index order whatever the thread count.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Maps `f` over `0..n` on `threads` workers (0: available cores); results in index order, first error wins.
pub(super) fn parallel_map<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let threads =
        if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
    let threads = threads.min(n).max(1);
    if threads == 1 {
        return (0..n).map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, Result<T>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        mine.push((i, f(i)));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    if out.len() != n {
        return Err(Error::Numerical { op: "parallel hypotheses", reason: "a worker thread panicked".into() });
    }
    out.sort_by_key(|x| x.0);
    out.into_iter().map(|x| x.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_order_and_reports_errors() {
        let v = parallel_map(100, 3, |i| Ok(i * 2)).unwrap();
        assert_eq!(v, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        let e = parallel_map(10, 2, |i| if i == 7 { Err(Error::invalid("x", "seven")) } else { Ok(i) });
        assert!(e.unwrap_err().to_string().contains("seven"));
    }
}
