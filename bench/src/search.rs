//! The saturation search: a coarse geometric ramp until a rate is not
//! sustained, then bisection between the highest sustained and the lowest
//! failed rate until they are within the requested precision.
//!
//! Pure bookkeeping (no I/O), so the strategy is unit-tested against a
//! synthetic capacity.

/// Search bounds and resolution.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    /// First rate tried, events/s.
    pub start: f64,
    /// Never offer more than this.
    pub max: f64,
    /// Never go below this when the first rates fail.
    pub min: f64,
    /// Ramp multiplier (> 1).
    pub factor: f64,
    /// Stop once (failed − sustained) / sustained is at most this.
    pub precision: f64,
    /// Stop after this many probes.
    pub max_probes: usize,
}

/// State of a search.
#[derive(Debug, Clone)]
pub struct Search {
    o: SearchOptions,
    best: Option<f64>,
    failed: Option<f64>,
    probes: usize,
}

impl Search {
    /// A search that has tried nothing yet.
    pub fn new(o: SearchOptions) -> Self {
        Self {
            o,
            best: None,
            failed: None,
            probes: 0,
        }
    }

    /// The next rate to try, or none when the search is over.
    pub fn next(&self) -> Option<f64> {
        if self.probes >= self.o.max_probes {
            return None;
        }
        match (self.best, self.failed) {
            (None, None) => Some(self.o.start.clamp(self.o.min, self.o.max)),
            (Some(best), None) => {
                (best < self.o.max).then(|| (best * self.o.factor).min(self.o.max))
            }
            (None, Some(failed)) => {
                let lower = failed / self.o.factor;
                (lower >= self.o.min).then_some(lower)
            }
            (Some(best), Some(failed)) => {
                ((failed - best) / best > self.o.precision).then(|| (best + failed) / 2.0)
            }
        }
    }

    /// Records the outcome of a probe at `rate`.
    pub fn record(&mut self, rate: f64, sustained: bool) {
        self.probes += 1;
        if sustained {
            self.best = Some(self.best.map_or(rate, |b| b.max(rate)));
            // A failure at or below a sustained rate was noise: ramp on.
            if self.failed.is_some_and(|f| f <= rate) {
                self.failed = None;
            }
        } else if self.best.is_none_or(|b| rate > b) {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest sustained rate so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// The lowest rate above it that failed.
    pub fn failed(&self) -> Option<f64> {
        self.failed
    }

    /// Probes run.
    pub fn probes(&self) -> usize {
        self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SearchOptions {
        SearchOptions {
            start: 1000.0,
            max: 1_000_000.0,
            min: 100.0,
            factor: 2.0,
            precision: 0.05,
            max_probes: 30,
        }
    }

    fn run(capacity: f64, o: SearchOptions) -> (Search, Vec<f64>) {
        let mut s = Search::new(o);
        let mut tried = Vec::new();
        while let Some(rate) = s.next() {
            tried.push(rate);
            s.record(rate, rate <= capacity);
        }
        (s, tried)
    }

    /// Ramp 1k, 2k, … 32k (fails at 32k), then bisect to within 5 %.
    #[test]
    fn finds_capacity_within_precision() {
        let (s, tried) = run(23_456.0, options());
        assert_eq!(
            &tried[..6],
            &[1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 32000.0]
        );
        let best = s.best().unwrap();
        let failed = s.failed().unwrap();
        assert!(best <= 23_456.0 && failed > 23_456.0);
        assert!((failed - best) / best <= 0.05);
        assert_eq!(s.probes(), tried.len());
        assert_eq!(tried.len(), 10);
    }

    /// A start above capacity ramps down first.
    #[test]
    fn ramps_down_when_the_start_fails() {
        let (s, tried) = run(300.0, options());
        assert_eq!(&tried[..3], &[1000.0, 500.0, 250.0]);
        assert!(s.best().unwrap() <= 300.0 && s.best().unwrap() >= 250.0);
    }

    /// Nothing sustained above the floor: no result.
    #[test]
    fn gives_up_at_the_floor() {
        let (s, tried) = run(10.0, options());
        assert_eq!(tried, vec![1000.0, 500.0, 250.0, 125.0]);
        assert_eq!(s.best(), None);
    }

    /// The probe budget bounds the search; the maximum bounds the ramp.
    #[test]
    fn budget_and_maximum_bound_it() {
        let (s, tried) = run(
            1e9,
            SearchOptions {
                max_probes: 3,
                ..options()
            },
        );
        assert_eq!(tried, vec![1000.0, 2000.0, 4000.0]);
        assert_eq!(s.best(), Some(4000.0));
        let (s, tried) = run(
            1e9,
            SearchOptions {
                max: 3000.0,
                ..options()
            },
        );
        assert_eq!(tried, vec![1000.0, 2000.0, 3000.0]);
        assert_eq!(s.best(), Some(3000.0));
    }

    /// A sustained rate above an earlier failure clears it (noise).
    #[test]
    fn noise_resumes_the_ramp() {
        let mut s = Search::new(options());
        s.record(1000.0, true);
        s.record(2000.0, false);
        assert_eq!(s.next(), Some(1500.0));
        s.record(1500.0, true);
        s.record(1750.0, true);
        s.record(2000.0, true);
        assert_eq!(s.failed(), None);
        assert_eq!(s.next(), Some(4000.0));
    }
}
