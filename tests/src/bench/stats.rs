//! Medians and spreads of repeated measurements.

/// Median, quartiles and extremes of a set of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
}

/// Linear-interpolated quantile of sorted data.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    // 0 ≤ pos ≤ len - 1: the casts neither truncate nor lose a sign.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "0 <= pos <= len - 1"
    )]
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (l, h) = (sorted[lo], sorted[hi]);
    l + (h - l) * (pos - pos.floor())
}

pub fn summarize(samples: &[f64]) -> Summary {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    Summary {
        n: s.len(),
        median: quantile(&s, 0.5),
        q1: quantile(&s, 0.25),
        q3: quantile(&s, 0.75),
        min: s.first().copied().unwrap_or(f64::NAN),
        max: s.last().copied().unwrap_or(f64::NAN),
    }
}

/// Element-wise ratios `a[i] / b[i]`.
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

impl Summary {
    /// `1.23× (1.20–1.31)`: median and min–max.
    pub fn ratio(&self) -> String {
        format!("{:.2}× ({:.2}–{:.2})", self.median, self.min, self.max)
    }

    /// `12.3 (11.9–13.0)` with `digits` decimals.
    pub fn value(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = digits
        )
    }
}

/// The ratio of medians `a / b` with the widest range the extremes allow.
pub fn ratio_of(a: &Summary, b: &Summary) -> Summary {
    Summary {
        n: a.n.min(b.n),
        median: a.median / b.median,
        q1: a.q1 / b.q3,
        q3: a.q3 / b.q1,
        min: a.min / b.max,
        max: a.max / b.min,
    }
}
