//! libtorch's intra-op thread count: fixed, or adapted to how busy the machine is.
//!
//! libtorch's CPU kernels split each operation over an OpenMP team and wait for all of its threads at the end.
//! When another program keeps the cores busy, one thread of the team is often descheduled and every operation
//! waits a scheduler time slice for it: on the 2-core development machine a speech batch ran 20 times slower
//! beside a build with 2 threads, while 1 thread only lost the share of the core it gave up. So `auto` counts
//! the cores that other processes kept busy over the last interval (from `/proc/stat`, minus this process's own
//! time from `/proc/self/stat`) and uses the rest, at least one and at most libtorch's own default (the cores, or
//! `OMP_NUM_THREADS`). Loops that run a model call [`rebalance`] between steps, which re-measures at most every
//! [`INTERVAL`]. Results can differ in the last bits between thread counts: give a fixed count where a run must
//! be bit-identical (training commands do).

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How often [`rebalance`] re-measures the machine's load.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// The first measurement comes sooner: loading a model already takes longer than this, so the first model call
/// runs with a count fitted to the load.
const FIRST_INTERVAL: Duration = Duration::from_millis(100);

/// A core counts as taken by others when they used more than this fraction of it over the interval.
const BUSY_SHARE: f64 = 0.3;

/// `--threads`: a fixed count, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadPolicy {
    /// Adapt to the load, between 1 and libtorch's default.
    #[default]
    Auto,
    /// Exactly this many (≥ 1).
    Fixed(usize),
}

impl FromStr for ThreadPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(ThreadPolicy::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) => {
                crate::limits::check_threads(n)?;
                Ok(ThreadPolicy::Fixed(n))
            }
            Err(_) => Err(Error::invalid("threads", format!("'{s}': expected auto or a count such as 2"))),
        }
    }
}

impl std::fmt::Display for ThreadPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThreadPolicy::Auto => write!(f, "auto"),
            ThreadPolicy::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// CPU time counters at one instant, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    at: Instant,
    /// Busy ticks of all cores (user, nice, system, irq, softirq, steal).
    busy: u64,
    /// All ticks of all cores, idle included.
    total: u64,
    /// This process's user + system ticks.
    own: u64,
}

impl Counters {
    fn read() -> Option<Counters> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Counters::parse(&stat, &own, Instant::now())
    }

    fn parse(stat: &str, own: &str, at: Instant) -> Option<Counters> {
        let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = cpu.split_whitespace().skip(1).map(|x| x.parse().ok()).collect::<Option<_>>()?;
        if v.len() < 4 {
            return None;
        }
        // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user and nice]
        let field = |i: usize| v.get(i).copied().unwrap_or(0);
        let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        let total = busy + field(3) + field(4);
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        let rest = &own[own.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15, i.e. the 12th and 13th after the name.
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(Counters { at, busy, total, own })
    }
}

/// Cores other processes kept busy between two readings (0 when nothing was measured).
fn others_busy(before: &Counters, after: &Counters, cores: usize) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let others = after.busy.saturating_sub(before.busy).saturating_sub(after.own.saturating_sub(before.own));
    others as f64 / total as f64 * cores as f64
}

/// The thread count for `others` cores taken by other processes, between 1 and `max`.
fn threads_for(others: f64, cores: usize, max: usize) -> usize {
    let taken = (others - BUSY_SHARE + 1.0).floor().max(0.0) as usize;
    cores.saturating_sub(taken).clamp(1, max.max(1))
}

struct Governor {
    cores: usize,
    max: usize,
    last: Counters,
    current: usize,
    changes: usize,
    measured: bool,
}

static GOVERNOR: Mutex<Option<Governor>> = Mutex::new(None);

/// Applies a policy: a fixed count now, or (auto, on Linux) installs the load governor that [`rebalance`] runs,
/// starting at libtorch's default. Returns the thread count in force.
pub fn apply(policy: ThreadPolicy) -> usize {
    match policy {
        ThreadPolicy::Fixed(n) => {
            crate::device::set_threads(n);
            n
        }
        ThreadPolicy::Auto => {
            let max = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            if let (Some(last), Ok(mut g)) = (Counters::read(), GOVERNOR.lock()) {
                *g = Some(Governor { cores, max, last, current: max, changes: 0, measured: false });
            }
            max
        }
    }
}

/// Re-measures the load when [`INTERVAL`] has passed since the last measurement and sets the thread count for
/// it (auto policy only; otherwise nothing). Cheap enough to call at every model step.
pub fn rebalance() {
    let Ok(mut guard) = GOVERNOR.try_lock() else { return };
    let Some(g) = guard.as_mut() else { return };
    let wait = if g.measured { INTERVAL } else { FIRST_INTERVAL };
    if g.last.at.elapsed() < wait {
        return;
    }
    let Some(now) = Counters::read() else { return };
    let want = threads_for(others_busy(&g.last, &now, g.cores), g.cores, g.max);
    g.last = now;
    g.measured = true;
    if want != g.current {
        crate::device::set_threads(want);
        g.current = want;
        g.changes += 1;
    }
}

/// The auto policy's state, for reports: (threads now, changes so far), or `None` without the governor.
pub fn governor_state() -> Option<(usize, usize)> {
    GOVERNOR.lock().ok()?.as_ref().map(|g| (g.current, g.changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "4242 (diffuse (worker)) R 1 2 3 4 5 6 7 8 9 10 300 50 0 0 20 0 3 0";

    fn stat(user: u64, idle: u64) -> String {
        format!("cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n")
    }

    #[test]
    fn parses_the_kernels_counters() {
        let c = Counters::parse(&stat(1000, 3000), OWN, Instant::now()).unwrap();
        assert_eq!((c.busy, c.total, c.own), (1000, 4000, 350));
        assert!(Counters::parse("intr 1\n", OWN, Instant::now()).is_none());
        assert!(Counters::parse(&stat(1, 1), "12 (x) R 1", Instant::now()).is_none());
    }

    #[test]
    fn subtracts_this_process_from_the_load() {
        let at = Instant::now();
        let a = Counters { at, busy: 1000, total: 4000, own: 100 };
        // 200 ticks over 2 cores: 150 busy, of which 50 ours -> 100 ticks of others = one core.
        let b = Counters { at, busy: 1150, total: 4200, own: 150 };
        assert!((others_busy(&a, &b, 2) - 1.0).abs() < 1e-12);
        assert_eq!(others_busy(&a, &a, 2), 0.0);
    }

    #[test]
    fn leaves_the_cores_others_use_and_keeps_one() {
        assert_eq!(threads_for(0.0, 2, 2), 2);
        assert_eq!(threads_for(0.25, 2, 2), 2);
        assert_eq!(threads_for(0.5, 2, 2), 1);
        assert_eq!(threads_for(2.0, 2, 2), 1);
        assert_eq!(threads_for(3.5, 16, 16), 12);
        assert_eq!(threads_for(0.0, 16, 4), 4, "never above libtorch's default (OMP_NUM_THREADS)");
    }

    #[test]
    fn parses_policies() {
        assert_eq!("auto".parse::<ThreadPolicy>().unwrap(), ThreadPolicy::Auto);
        assert_eq!("3".parse::<ThreadPolicy>().unwrap(), ThreadPolicy::Fixed(3));
        assert!("0".parse::<ThreadPolicy>().is_err());
        assert!("many".parse::<ThreadPolicy>().unwrap_err().to_string().contains("auto"));
    }
}
