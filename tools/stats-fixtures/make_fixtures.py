"""Reference values for daemon/stats from SciPy (test/stats/bounds.test.ts compares against them).

- normal: Φ⁻¹(p) (scipy.stats.norm.ppf) and Φ(x) (norm.cdf), tails included.
- binomial_cdf: P(X ≤ k), X ~ Binomial(n, p) (scipy.stats.binom.cdf).
- clopper_pearson: one-sided bounds at confidence c — lower = Beta(k, n−k+1).ppf(1−c),
  upper = Beta(k+1, n−k).ppf(c) (Clopper & Pearson 1934), as statsmodels' proportion_confint
  method="beta" computes them; k = 0 and k = n by their closed forms.
- wilson: the score bounds (Wilson 1927), z = norm.ppf(c).
- student_t: Student's t quantiles (scipy.stats.t.ppf), for the skew-corrected mean bound.
- paired: the discordant-pair bound of stats/binomial.ts, pairedDifferenceUpper, its two
  Clopper–Pearson factors taken from SciPy's beta quantiles at √c each.
"""
import json
import math

from scipy import stats

CONF = [0.9, 0.95, 0.975, 0.99, 0.999, 0.9999]


def cp(k, n, c):
    a = 1 - c
    lower = 0.0 if k == 0 else (a ** (1 / n) if k == n else float(stats.beta.ppf(a, k, n - k + 1)))
    upper = 1.0 if k == n else (1 - a ** (1 / n) if k == 0 else float(stats.beta.ppf(c, k + 1, n - k)))
    return lower, upper


def wilson(k, n, c):
    z = float(stats.norm.ppf(c))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = (z / den) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def main():
    out = {"scipy": __import__("scipy").__version__, "normal": [], "student_t": [], "binomial_cdf": [], "clopper_pearson": [], "wilson": [], "paired": []}
    for nu in [4, 5, 10, 19, 30, 60, 111, 250]:
        for p in [0.9, 0.95, 0.975, 0.99, 0.999, 0.9999, 0.99999]:
            out["student_t"].append({"p": p, "nu": nu, "quantile": float(stats.t.ppf(p, nu))})
    for p in [1e-6, 1e-4, 0.001, 0.0125, 0.025, 0.05, 0.1, 0.3, 0.5, 0.7, 0.95, 0.975, 0.999]:
        out["normal"].append({"p": p, "quantile": float(stats.norm.ppf(p))})
    for x in [-6, -4.5, -3, -1.96, -1, -0.3, 0, 0.5, 1.645, 2.5, 4]:
        out["normal"].append({"x": x, "cdf": float(stats.norm.cdf(x))})
    for n, p in [(5, 0.5), (20, 0.05), (30, 0.116), (48, 0.02), (100, 0.3), (200, 0.5), (500, 0.01), (1000, 0.4)]:
        for k in sorted({0, 1, n // 10, n // 4, n // 2, n - 1, n}):
            out["binomial_cdf"].append({"k": k, "n": n, "p": p, "cdf": float(stats.binom.cdf(k, n, p))})
    for n in [1, 6, 10, 20, 30, 48, 100, 250]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for c in CONF:
                lo, up = cp(k, n, c)
                out["clopper_pearson"].append({"k": k, "n": n, "confidence": c, "lower": lo, "upper": up})
                if c in (0.95, 0.975):
                    wl, wu = wilson(k, n, c)
                    out["wilson"].append({"k": k, "n": n, "confidence": c, "lower": wl, "upper": wu})
    for n, b, r in [(30, 0, 0), (30, 3, 1), (30, 1, 3), (48, 4, 0), (100, 10, 10), (100, 2, 9), (200, 15, 5), (42, 0, 2)]:
        for c in [0.95, 0.975, 0.999]:
            each = math.sqrt(c)
            m = b + r
            q_u = cp(m, n, each)[1]
            pi_u = 1.0 if m == 0 else cp(b, m, each)[1]
            out["paired"].append({"n": n, "candidateOnly": b, "referenceOnly": r, "confidence": c,
                                  "estimate": (b - r) / n, "upper": min(1.0, q_u * max(0.0, 2 * pi_u - 1))})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
