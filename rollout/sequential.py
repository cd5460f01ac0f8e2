"""Anytime-valid tests: p-values that stay valid however often the judge looks.

The controller judges a stage after its bake and again after every hold, each time on all the
records since the stage began. A fixed-sample test read that way rejects a true null far more
often than its α. Each test here is instead the reciprocal of a **mixture likelihood ratio**, a
non-negative (super)martingale under the null, so by Ville's inequality
``P(p_t <= a for some look t) <= a`` — the always-valid p-values of Johari et al. ("Peeking at
A/B tests", KDD 2017) and the sequential canary tests of Lindon et al. (Netflix, "Rapid
regression detection in software deployments through sequential testing", KDD 2022).

* :func:`mean_shift_p` — the normal-mixture SPRT (mSPRT) for a difference of means beyond a
  shift; the judge applies it to log latencies (a ratio of geometric means beyond
  ``1 + tolerance``) with a plug-in variance, as Johari et al. do for A/B tests.
* :func:`mean_shift_upper` — the same mixture read as a confidence sequence: the largest
  difference not rejected at level α. ``mean_shift_p(bound - estimate, V) <= α`` exactly when
  ``mean_shift_upper(estimate, V, α) <= bound`` (the judge's non-inferiority rule).
* :func:`rate_bounds` — a confidence sequence for one Bernoulli rate: the conjugate Beta mixture
  (prior Beta(1, 199), mean 0.5 %, for rare events), whose log likelihood ratio against a rate is
  concave in the rate, so the rates it does not reject form one interval.
* :func:`bernoulli_above_p` / :func:`bernoulli_below_p` — a Beta mixture truncated to the
  alternative side, exact for a sequence of 0/1 outcomes: "the rate is above ``p0``" (rollback
  evidence) and "the rate is below ``p0``" (non-inferiority evidence). Counting events, the
  conditional form Netflix uses for count metrics: given the total number of events in one
  window, each event landed on the candidate with probability ``share`` under "no worse".

All densities come from ``scipy.stats``; the only arithmetic here is the ratio of two of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import special, stats

# The mixing distributions. For the mean shift, N(0, tau^2) over the effect (log ratio);
# tau = 0.1 puts the best power on changes of 10-30 % in geometric mean beyond the tolerance.
DEFAULT_TAU = 0.1
# For rates: Beta prior with mean min(3 p0, (1 + p0) / 2) and this concentration, truncated to
# the alternative side. Tuned by bench.rollout: events three times as frequent as allowed.
_CONCENTRATION = 30.0
# the Bernoulli mixtures are pure functions of (events, trials, bound): a judge that looks every
# few minutes asks the same few thousand of them again and again
_CACHE = 1 << 16


def _p_from_log_lr(log_lr: float) -> float:
    if not math.isfinite(log_lr):
        return 0.0 if log_lr > 0 else 1.0
    return min(1.0, math.exp(-log_lr))


def mean_shift_p(estimate: float, variance: float, tau: float = DEFAULT_TAU) -> float:
    """Always-valid p of "the mean difference is <= 0" given its estimate and that variance.

    mSPRT with a N(0, tau^2) mixture: Lambda = N(estimate; 0, V + tau^2) / N(estimate; 0, V).
    One-sided: an estimate <= 0 is no evidence (p = 1); restricting a two-sided mixture to one
    side keeps it valid (it can only reject less often).
    """
    if estimate <= 0 or not math.isfinite(estimate):
        return 1.0
    if variance <= 0:
        return 0.0
    sd, wide = math.sqrt(variance), math.sqrt(variance + tau * tau)
    log_lr = float(stats.norm.logpdf(estimate, 0.0, wide) - stats.norm.logpdf(estimate, 0.0, sd))
    return _p_from_log_lr(log_lr)


def mean_shift_upper(
    estimate: float, variance: float, alpha: float, tau: float = DEFAULT_TAU
) -> float:
    """Upper end of the level-``alpha`` confidence sequence of the mean difference.

    The inverse of :func:`mean_shift_p`: the mixture's log likelihood ratio at a distance x from
    the estimate is ``x^2 tau^2 / (2 V (V + tau^2)) - log((V + tau^2) / V) / 2`` (the two
    ``scipy.stats.norm`` log densities above), which reaches ``log(1 / alpha)`` at
    ``x = sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V)))``.
    """
    if not math.isfinite(estimate) or not math.isfinite(variance) or variance < 0:
        return math.inf
    if variance == 0:
        return estimate
    wide = variance + tau * tau
    width = math.sqrt(
        variance * wide / (tau * tau) * (2.0 * math.log(1.0 / alpha) + math.log(wide / variance))
    )
    return estimate + width


# the conjugate prior of the rate confidence sequences: mean 0.5 %, an exponential-like shape
# that puts its weight where rare events (merge errors near 0.2 %) are
_RATE_PRIOR = (1.0, 199.0)
# rates at which the sequence is evaluated: log-spaced from 1e-6 to 1, 3.5 % apart; a bound is
# rounded outwards to the next grid point (a wider interval: still valid)
_RATE_GRID = np.exp(np.linspace(math.log(1e-6), 0.0, 400))[:-1]


@lru_cache(maxsize=_CACHE)
def rate_bounds(k: int, n: int, alpha: float) -> tuple[float, float]:
    """(lower, upper) of the level-``alpha`` confidence sequence of a Bernoulli rate after ``k``
    events in ``n`` trials.

    The mixture likelihood ratio of the rate q against a rate p is
    ``betabinom.pmf(k; n, a, b) / binom.pmf(k; n, p)``, a martingale under p, so by Ville's
    inequality the rates with ratio < 1/alpha contain the true one at every n with probability
    >= 1 - alpha. log binom.pmf(k; n, p) is concave in p: those rates are one interval.
    """
    if n <= 0:
        return 0.0, 1.0
    a, b = _RATE_PRIOR
    log_lr = float(stats.betabinom.logpmf(k, n, a, b)) - stats.binom.logpmf(k, n, _RATE_GRID)
    inside = np.flatnonzero(log_lr < math.log(1.0 / alpha))
    if not inside.size:  # the grid is too coarse for this n: the trivial (valid) interval
        return 0.0, 1.0
    low = float(_RATE_GRID[inside[0] - 1]) if inside[0] > 0 else 0.0
    high = float(_RATE_GRID[inside[-1] + 1]) if inside[-1] + 1 < len(_RATE_GRID) else 1.0
    return low, high


def _prior(p0: float) -> tuple[float, float]:
    mean = min(3.0 * p0, (1.0 + p0) / 2.0)
    return mean * _CONCENTRATION, (1.0 - mean) * _CONCENTRATION


@lru_cache(maxsize=_CACHE)
def bernoulli_above_p(k: int, n: int, p0: float) -> float:
    """Always-valid p of "the rate is <= p0" after ``k`` events in ``n`` trials.

    The mixture puts a Beta prior on the rate q, truncated to q >= p0. Each component's
    likelihood ratio against p0 is a supermartingale for every rate <= p0, so the mixture is too.
    """
    if n == 0 or k / n <= p0:
        return 1.0
    if p0 <= 0.0:
        return 0.0  # an event where none is allowed
    if p0 >= 1.0:
        return 1.0
    a, b = _prior(p0)
    log_lr = (
        _beta_logsf(p0, a + k, b + n - k)
        - _beta_logsf(p0, a, b)
        + _log_beta_ratio(a, b, k, n)
        - float(stats.binom.logpmf(k, n, p0))
    )
    return _p_from_log_lr(log_lr)


@lru_cache(maxsize=_CACHE)
def bernoulli_below_p(k: int, n: int, p0: float) -> float:
    """Always-valid p of "the rate is >= p0": evidence that the rate is below ``p0``."""
    if n == 0 or k / n >= p0:
        return 1.0
    if p0 >= 1.0:
        return 0.0
    a, b = _prior(p0 / 3.0)  # alternatives well below the bound
    log_lr = (
        _beta_logcdf(p0, a + k, b + n - k)
        - _beta_logcdf(p0, a, b)
        + _log_beta_ratio(a, b, k, n)
        - float(stats.binom.logpmf(k, n, p0))
    )
    return _p_from_log_lr(log_lr)


def _beta_logcdf(x: float, a: float, b: float) -> float:
    """``stats.beta.logcdf`` through ``special.betainc`` (the same regularised incomplete beta
    without the distribution object's per-call argument handling); scipy's own log form where
    the plain one underflows."""
    value = float(special.betainc(a, b, x))
    return math.log(value) if value > 1e-300 else float(stats.beta.logcdf(x, a, b))


def _beta_logsf(x: float, a: float, b: float) -> float:
    """``stats.beta.logsf`` through ``special.betaincc``, as :func:`_beta_logcdf`."""
    value = float(special.betaincc(a, b, x))
    return math.log(value) if value > 1e-300 else float(stats.beta.logsf(x, a, b))


def _log_beta_ratio(a: float, b: float, k: int, n: int) -> float:
    """log of the Beta-binomial marginal over the binomial coefficient: the mixture's numerator
    (as a binomial pmf), so that dividing by ``binom.pmf(k, n, p0)`` cancels the coefficient."""
    return float(stats.betabinom.logpmf(k, n, a, b))


# Rate ratios: a grid mixture over rho >= rho0, half-normal weights on log(rho / rho0).
_RATIO_GRID = np.exp(np.linspace(0.0, math.log(50.0), 64))
_RATIO_WEIGHTS = stats.halfnorm.pdf(np.log(_RATIO_GRID), scale=1.0)
_RATIO_WEIGHTS = _RATIO_WEIGHTS / _RATIO_WEIGHTS.sum()


def rate_ratio_p(strata: Sequence[tuple[int, int, float]], ratio0: float) -> float:
    """Always-valid p of "the candidate's event rate is <= ratio0 x the control's".

    ``strata``: per window (this stage, the stage before) the candidate's events ``k``, both
    paths' events ``K`` and the candidate's share ``s`` of executions. Given ``K``, each event
    is the candidate's with probability ``s rho / (s rho + 1 - s)`` (rho: the rate ratio), so
    for every rho >= ratio0 the likelihood ratio against ratio0 is a supermartingale under the
    null, in every stratum; the mixture over rho is one too.
    """
    used = [(k, big_k, s) for k, big_k, s in strata if big_k > 0 and 0.0 < s < 1.0]
    if not used or sum(k for k, _, _ in used) == 0:
        return 1.0
    rho = ratio0 * _RATIO_GRID
    log_lr = np.zeros_like(rho)
    for k, big_k, s in used:
        alt = s * rho / (s * rho + 1.0 - s)
        null = s * ratio0 / (s * ratio0 + 1.0 - s)
        log_lr += stats.binom.logpmf(k, big_k, alt) - stats.binom.logpmf(k, big_k, null)
    return _p_from_log_lr(float(special.logsumexp(log_lr, b=_RATIO_WEIGHTS)))
