//! Nelder–Mead minimisation with restarts: the search's optimiser over a grid's free points.

/// Nelder–Mead on `f` from `x0` (initial simplex steps `step`), until `stop` says so; restarts from the best point
/// when the simplex collapses. Returns the best point, its value and the evaluations spent.
pub fn nelder_mead(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x0: &[f64],
    step: f64,
    stop: &mut dyn FnMut(usize) -> bool,
) -> (Vec<f64>, f64, usize) {
    let n = x0.len();
    let mut evals = 0usize;
    let mut eval = |x: &[f64], evals: &mut usize| {
        *evals += 1;
        let v = f(x);
        if v.is_finite() { v } else { f64::INFINITY }
    };
    let mut best = (x0.to_vec(), eval(x0, &mut evals));
    'restart: loop {
        let mut simplex: Vec<(Vec<f64>, f64)> = vec![best.clone()];
        for i in 0..n {
            let mut x = best.0.clone();
            x[i] += step;
            let v = eval(&x, &mut evals);
            simplex.push((x, v));
        }
        loop {
            simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
            if simplex[0].1 < best.1 {
                best = simplex[0].clone();
            }
            if stop(evals) {
                break 'restart;
            }
            let spread = simplex.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max) - simplex[0].1;
            let size = simplex.iter().skip(1).map(|s| dist(&s.0, &simplex[0].0)).fold(0.0, f64::max);
            if spread <= 1e-12 * simplex[0].1.abs().max(1e-300) || size < 1e-6 {
                continue 'restart;
            }
            let centroid: Vec<f64> =
                (0..n).map(|j| simplex[..n].iter().map(|s| s.0[j]).sum::<f64>() / n as f64).collect();
            let along =
                |t: f64| -> Vec<f64> { (0..n).map(|j| centroid[j] + t * (simplex[n].0[j] - centroid[j])).collect() };
            let reflected = along(-1.0);
            let fr = eval(&reflected, &mut evals);
            if fr < simplex[0].1 {
                let expanded = along(-2.0);
                let fe = eval(&expanded, &mut evals);
                simplex[n] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
            } else if fr < simplex[n - 1].1 {
                simplex[n] = (reflected, fr);
            } else {
                let contracted = if fr < simplex[n].1 { along(-0.5) } else { along(0.5) };
                let fc = eval(&contracted, &mut evals);
                if fc < simplex[n].1.min(fr) {
                    simplex[n] = (contracted, fc);
                } else {
                    let x0 = simplex[0].0.clone();
                    for s in simplex.iter_mut().skip(1) {
                        s.0 = (0..n).map(|j| x0[j] + 0.5 * (s.0[j] - x0[j])).collect();
                        s.1 = eval(&s.0, &mut evals);
                    }
                }
            }
        }
    }
    (best.0, best.1, evals)
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nelder_mead_finds_the_minimum_of_a_quadratic() {
        let mut f = |x: &[f64]| (x[0] - 1.0).powi(2) + 10.0 * (x[1] + 2.0).powi(2) + 3.0;
        let (x, v, evals) = nelder_mead(&mut f, &[5.0, 5.0], 1.0, &mut |n| n >= 400);
        assert!((x[0] - 1.0).abs() < 1e-3 && (x[1] + 2.0).abs() < 1e-3 && (v - 3.0).abs() < 1e-6, "{x:?} {v}");
        assert!(evals >= 400);
    }
}
