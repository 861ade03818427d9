//! Resource limits: every size that reaches an allocation or a loop is checked against a documented bound
//! first, so a small input (a header, a sidecar, a flag) can never ask for gigabytes or hours.
//!
//! Each domain crate keeps its own bounds beside the code they protect; this module holds the shared check and
//! the limits of core itself. docs/reliability.md lists every limit and where it is enforced.

use crate::{Error, Result};

/// Largest libtorch/worker thread count accepted for `--threads`, whatever the machine: more threads than this
/// only cost start-up time (1 000 threads took 19 s to start on a 2-core machine).
pub const MAX_THREADS: usize = 1024;

/// Most samples (trajectories) of one solver benchmark problem (`samples` in a problem file).
pub const MAX_BENCH_SAMPLES: usize = 1 << 20;

/// Largest model-evaluation budget of one benchmark row (`nfe` in a problem file) or sampler run.
pub const MAX_NFE: usize = 100_000;

/// Most entries of a problem file's `nfe` or `tolerances` list.
pub const MAX_BUDGETS: usize = 1000;

/// Largest element count of one benchmark's state tensor (`samples × dim`): 2^28 f64 values are 2 GiB.
pub const MAX_BENCH_ELEMENTS: usize = 1 << 28;

/// `Ok` when `value ≤ max`; otherwise an [`Error::Invalid`] naming `field` (a flag such as `--steps` or a file
/// field such as `samples`) and the limit.
pub fn at_most(field: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(Error::invalid(
            field,
            format!("{value} is over the limit of {max} (docs/reliability.md lists every limit)"),
        ));
    }
    Ok(())
}

/// `Ok` when `1 ≤ value ≤ max`, else an error naming `field`.
pub fn between_one_and(field: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::invalid(field, "must be at least 1"));
    }
    at_most(field, value, max)
}

/// The product `a·b` when it is at most `max`, else an error naming `field` (no overflow on huge factors).
pub fn product_at_most(field: &str, a: usize, b: usize, max: usize) -> Result<usize> {
    match a.checked_mul(b) {
        Some(p) if p <= max => Ok(p),
        _ => Err(Error::invalid(
            field,
            format!("{a} × {b} is over the limit of {max} elements (docs/reliability.md lists every limit)"),
        )),
    }
}

/// Checks a requested thread count: at least 1 and at most [`MAX_THREADS`].
pub fn check_threads(n: usize) -> Result<()> {
    between_one_and("--threads", n, MAX_THREADS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_field_and_the_bound() {
        assert!(at_most("--steps", 10, 10).is_ok());
        let e = at_most("--steps", 4_000_000_000, 10).unwrap_err().to_string();
        assert!(e.contains("--steps") && e.contains("4000000000") && e.contains("limit of 10"), "{e}");
        assert!(between_one_and("samples", 0, 5).unwrap_err().to_string().contains("at least 1"));
        assert_eq!(product_at_most("x", 3, 4, 12).unwrap(), 12);
        assert!(product_at_most("x", usize::MAX, 2, usize::MAX).is_err());
        assert!(check_threads(100_000).unwrap_err().to_string().contains("--threads"));
        assert!(check_threads(0).is_err());
        assert!(check_threads(8).is_ok());
    }
}
