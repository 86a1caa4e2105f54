"""kdlib.maths.constrained: seed 004's constrained reward (Eq. 4), term II (Eq. 5), GKD(-GRPO) rewards.

Spec seeds003_004 B1, B2, B7, C2.
"""

import math

import pytest
import torch

from kdlib.maths.advantages import grpo_advantages
from kdlib.maths.constrained import (
    budget_used,
    constrained_reward,
    constrained_token_rewards,
    explicit_term_mask,
    explicit_term_mask_tokens,
    feasibility_breakdown,
    gkd_grpo_reward,
    gkd_reward,
    sequence_kl,
    term_ii_loss,
    term_ii_token_loss,
)
from kdlib.maths.full_vocab import full_vocab_kl

NAN, INF = float("nan"), float("inf")
D, N_PEN = 0.35, 20.0


def _f64(x):
    return torch.tensor(x, dtype=torch.float64)


# a row with a calculator-inserted token at position 2 and padding at 4: both hold garbage
KL_TOK = _f64([[0.1, 0.3, 100.0, 0.2, NAN], [0.5, 0.7, INF, 0.0, 0.0]])
MASK = torch.tensor([[True, True, False, True, False], [True, True, False, False, False]])


# ----------------------------------------------------------------------------------------
# per-sample KL and the budget
# ----------------------------------------------------------------------------------------
def test_sequence_kl_excludes_calculator_tokens_and_padding():
    assert torch.allclose(sequence_kl(KL_TOK, MASK), _f64([0.2, 0.6]))  # (0.1+0.3+0.2)/3, (0.5+0.7)/2
    assert torch.allclose(sequence_kl(KL_TOK, MASK, reduction="sum"), _f64([0.6, 1.2]))
    kl = KL_TOK.clone().requires_grad_(True)
    sequence_kl(kl, MASK).sum().backward()
    assert torch.allclose(kl.grad, torch.where(MASK, _f64([[1 / 3], [1 / 2]]), 0.0))
    assert sequence_kl(KL_TOK, torch.zeros_like(MASK)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        sequence_kl(KL_TOK, MASK, reduction="max")


def test_budget_used_exclusive_and_inclusive():
    excl = budget_used(KL_TOK, MASK)
    incl = budget_used(KL_TOK, MASK, cumsum="inclusive")
    assert torch.allclose(excl, _f64([[0.0, 0.1 / 3, 0.0, 0.4 / 3, 0.0], [0.0, 0.25, 0.0, 0.0, 0.0]]))
    assert torch.allclose(incl, _f64([[0.1 / 3, 0.4 / 3, 0.0, 0.2, 0.0], [0.25, 0.6, 0.0, 0.0, 0.0]]))
    assert torch.allclose(budget_used(KL_TOK, MASK, reduction="sum")[0], _f64([0.0, 0.1, 0.0, 0.4, 0.0]))
    with pytest.raises(ValueError):
        budget_used(KL_TOK, MASK, cumsum="both")


# ----------------------------------------------------------------------------------------
# Eq. (4), sequence granularity
# ----------------------------------------------------------------------------------------
def test_feasible_gets_R_infeasible_gets_minus_n_plus_kl():
    R = _f64([1.0, 0.0, 1.0, 0.0, 1.0])
    kl = _f64([0.1, 0.35, 0.36, 0.9, 2.0])
    out = constrained_reward(R, kl, D, N_PEN)
    assert torch.allclose(out, _f64([1.0, 0.0, -20.36, -20.9, -22.0]))  # KL = d is feasible ("d - sum >= 0")
    assert constrained_reward(R, kl, D, N_PEN, use_phi=False).tolist() == [1.0, 0.0, -20.0, -20.0, -20.0]
    kl_grad = kl.clone().requires_grad_(True)
    assert not constrained_reward(R, kl_grad, D).requires_grad  # a reward, detached


def test_all_infeasible_group_zero_advantage_without_phi_and_kl_ordered_with_phi():
    # spec B2: 8 infeasible samples, KL 0.4 ... 1.2
    kl = _f64([0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2])
    R = _f64([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # the task reward is irrelevant once infeasible
    no_phi = grpo_advantages(constrained_reward(R, kl, D, N_PEN, use_phi=False), 8)
    assert torch.equal(no_phi, torch.zeros(8, dtype=torch.float64))  # no learning signal
    with_phi = grpo_advantages(constrained_reward(R, kl, D, N_PEN), 8, unbiased=False)
    assert (with_phi.diff() < 0).all()  # the more a sample deviates, the lower its advantage
    expected = _f64([1.451, 1.051, 0.651, 0.250, -0.150, -0.550, -0.951, -1.751])  # "-1.75 ... +1.45"
    assert torch.allclose(with_phi, expected, atol=5e-4)
    unbiased = grpo_advantages(constrained_reward(R, kl, D, N_PEN), 8)  # the default (TRL) std
    assert torch.allclose(unbiased, with_phi * math.sqrt(7 / 8), rtol=1e-4)


def test_mixed_group_rewards_and_feasibility_breakdown():
    R = _f64([1, 1, 0, 0, 0, 0, 0, 0])
    kl = _f64([0.1, 0.2, 0.3, 0.05, 0.55, 0.85, 0.45, 0.65])  # the last four are infeasible
    r_hat = constrained_reward(R, kl, D)
    assert (r_hat[:4] == R[:4]).all() and torch.allclose(r_hat[4:], -(N_PEN + kl[4:]))
    share = feasibility_breakdown(kl, D, 4)
    assert share == {"all_feasible": 0.5, "mixed": 0.0, "all_infeasible": 0.5}
    assert feasibility_breakdown(kl, D, 8) == {"all_feasible": 0.0, "mixed": 1.0, "all_infeasible": 0.0}


# ----------------------------------------------------------------------------------------
# Eq. (5) term II
# ----------------------------------------------------------------------------------------
def test_term_ii_is_zero_on_feasible_rows_and_dkl_on_violating_ones():
    kl = _f64([0.1, 0.34, 0.5, 1.0]).requires_grad_(True)
    viol = explicit_term_mask(kl, D)
    assert viol.tolist() == [False, False, True, True]
    loss = term_ii_loss(kl, viol)
    assert loss.item() == pytest.approx((0.5 + 1.0) / 4)
    loss.backward()
    assert kl.grad.tolist() == [0.0, 0.0, 0.25, 0.25]
    assert explicit_term_mask(kl, D, eps_b=0.02).tolist() == [False, True, True, True]  # tolerance of Eq. 5
    all_feasible = _f64([0.1, 0.2]).requires_grad_(True)
    assert term_ii_loss(all_feasible, explicit_term_mask(all_feasible, D)).item() == 0.0
    with_inf = _f64([INF, 0.5])  # a non-violating row's value never enters
    assert term_ii_loss(with_inf, torch.tensor([False, True])).item() == pytest.approx(0.25)


def test_term_ii_backprops_through_the_full_vocab_kl_of_violating_rows_only():
    gen = torch.Generator().manual_seed(0)
    N, L, V = 4, 6, 9
    s = torch.randn(N, L, V, generator=gen, dtype=torch.float64)
    s[0] *= 0.02  # near-uniform rows: close to a uniform teacher, feasible
    s[1] *= 0.02
    s[2:] *= 4.0  # peaked rows: far from it, infeasible
    s.requires_grad_(True)
    t = torch.zeros(N, L, V, dtype=torch.float64)
    mask = torch.ones(N, L, dtype=torch.bool)
    mask[1, 2] = mask[3, 1] = False  # calculator tokens
    kl_seq = sequence_kl(full_vocab_kl(s, t, mask), mask)
    viol = explicit_term_mask(kl_seq, D)
    assert viol.tolist() == [False, False, True, True]
    term_ii_loss(kl_seq, viol).backward()
    assert (s.grad[:2] == 0).all()
    assert (s.grad[3, 1] == 0).all() and (s.grad[2].abs().sum(-1) > 0).all()


# ----------------------------------------------------------------------------------------
# GKD and GKD-GRPO
# ----------------------------------------------------------------------------------------
def test_gkd_grpo_lambda_zero_equals_grpo_exactly():
    gen = torch.Generator().manual_seed(1)
    R = torch.randint(0, 2, (16,), generator=gen).double()
    kl = torch.rand(16, generator=gen, dtype=torch.float64) * 2
    assert torch.equal(gkd_grpo_reward(R, kl, 0.0), R)
    assert torch.equal(grpo_advantages(gkd_grpo_reward(R, kl, 0.0), 8), grpo_advantages(R, 8))
    assert torch.allclose(gkd_grpo_reward(R, kl, 0.1), R - 0.1 * kl)
    assert torch.equal(gkd_reward(kl), -kl)
    assert not gkd_reward(kl.clone().requires_grad_(True)).requires_grad


# ----------------------------------------------------------------------------------------
# Eq. (4), token granularity
# ----------------------------------------------------------------------------------------
def test_token_rewards_hand_computed():
    # row 0: KL_0 = 0.2 <= d: 0 ... 0, R at the last action (position 3; 2 is a calculator token)
    # row 1: C = (0.25, 0.35); exclusive used = (0, 0.25): feasible everywhere, last step not counted
    R = _f64([1.0, 1.0])
    out = constrained_token_rewards(R, KL_TOK, MASK, D, N_PEN)
    assert torch.equal(out, _f64([[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]]))
    # inclusive: row 1 used = (0.25, 0.6): the last step is infeasible -> -(n + kl_t), no R
    incl = constrained_token_rewards(R, KL_TOK, MASK, D, N_PEN, cumsum="inclusive")
    assert torch.allclose(incl, _f64([[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, -20.7, 0.0, 0.0, 0.0]]))
    no_phi = constrained_token_rewards(R, KL_TOK, MASK, D, N_PEN, use_phi=False, cumsum="inclusive")
    assert no_phi[1].tolist() == [0.0, -20.0, 0.0, 0.0, 0.0]
    # a budget exhausted early: every later action is penalised with its own kl_t
    kl = _f64([[0.9, 0.1, 0.3, 0.2]])
    m = torch.ones(1, 4, dtype=torch.bool)
    out = constrained_token_rewards(_f64([1.0]), kl, m, D, N_PEN)  # C = kl / 4; used = 0, .225, .25, .325
    assert torch.allclose(out, _f64([[0.0, 0.0, 0.0, 1.0]]))
    out = constrained_token_rewards(_f64([1.0]), kl, m, 0.24, N_PEN)
    assert torch.allclose(out, _f64([[0.0, 0.0, -20.3, -20.2]]))


@pytest.mark.parametrize("seed", range(5))
def test_token_mode_inclusive_flags_exactly_the_rows_sequence_mode_flags(seed):
    gen = torch.Generator().manual_seed(seed)
    N, L = 256, 12
    kl = torch.rand(N, L, generator=gen, dtype=torch.float32) ** 3  # non-negative, skewed
    lengths = torch.randint(1, L + 1, (N,), generator=gen)
    mask = (torch.arange(L) < lengths[:, None]) & (torch.rand(N, L, generator=gen) > 0.2)
    mask[:, 0] = True
    kl = torch.where(mask, kl, torch.full_like(kl, NAN))  # garbage at calculator tokens / padding
    d = float(sequence_kl(kl, mask).median())
    for reduction in ("mean", "sum"):
        seq_kl = sequence_kl(kl, mask, reduction=reduction)
        dd = d if reduction == "mean" else float(seq_kl.median())
        seq_flag = seq_kl > dd
        R = torch.ones(N)
        incl = constrained_token_rewards(R, kl, mask, dd, reduction=reduction, cumsum="inclusive")
        tok_flag = (incl < 0).any(dim=1)
        assert torch.equal(tok_flag, seq_flag)
        assert 0 < seq_flag.sum() < N
        # the row's R arrives iff the row is feasible
        assert torch.equal((incl == 1).any(dim=1), ~seq_flag)
        # exclusive (Eq. 4 literal): the last step's own cost is not counted, so a subset is flagged
        excl_flag = (constrained_token_rewards(R, kl, mask, dd, reduction=reduction) < 0).any(dim=1)
        assert not (excl_flag & ~seq_flag).any()


def test_token_term_ii_mask_and_loss():
    viol = explicit_term_mask_tokens(KL_TOK, MASK, 0.1)  # exclusive used: row0 (0, .033, -, .133), row1 (0, .25)
    assert viol.tolist() == [[False, False, False, True, False], [False, True, False, False, False]]
    kl = KL_TOK.clone().requires_grad_(True)
    loss = term_ii_token_loss(kl, viol, MASK)
    assert loss.item() == pytest.approx((0.2 + 0.7) / 5)  # 5 action tokens in the batch
    loss.backward()
    assert torch.equal(kl.grad, torch.where(viol, _f64(1 / 5), _f64(0.0)))
    incl = explicit_term_mask_tokens(KL_TOK, MASK, 0.1, cumsum="inclusive")
    assert incl.tolist() == [[False, True, False, True, False], [True, True, False, False, False]]


def test_table_and_verdict_pair_ours_and_grpo_over_training_seeds():
    """Analytic case: two sets, three seeds; ours is 10 / 20 / 30 FAC points above GRPO on seeds 0 / 1 / 2 (both
    sets) and every output of ours is within d while GRPO's are not: FAC +20 +- t(0.975, 2) * 10 / sqrt(3), CS
    +100 +- 0; the table's FAC half-width over seeds is the t interval of the per-seed FAC."""
    import pandas as pd

    from kdlib.studies.constrained_kd import seed_differences, summary_table

    rows = []
    for seed, extra in enumerate((1, 2, 3)):  # ours answers extra examples of 10 correctly
        for set_ in ("test", "hard"):
            for i in range(10):
                rows.append({"task": "t", "set": set_, "method": "cmdp", "seed": seed, "id": i,
                             "correct": int(i < 3 + extra), "kl": 0.1})
                rows.append({"task": "t", "set": set_, "method": "grpo", "seed": seed, "id": i,
                             "correct": int(i < 3), "kl": 1.0})
    ex = pd.DataFrame(rows)
    d = seed_differences(ex, "t", "cmdp", "grpo", d=0.5)
    assert d["seeds"] == 3 and d["fac"] == pytest.approx(20.0) and d["cs"] == pytest.approx(100.0)
    assert d["fac_ci"] == pytest.approx(4.302652729911275 * 10 / math.sqrt(3)) and d["cs_ci"] == pytest.approx(0.0)
    t = summary_table(ex, pd.DataFrame(), {"t": 0.5}).set_index(["set", "method"])
    assert t.loc[("test", "cmdp"), "seeds"] == 3 and t.loc[("test", "cmdp"), "fac"] == pytest.approx(50.0)
    assert t.loc[("test", "cmdp"), "fac_ci"] == pytest.approx(4.302652729911275 * 10 / math.sqrt(3))
    assert seed_differences(ex[ex.seed == 0], "t", "cmdp", "grpo", d=0.5) is None  # one seed: no interval


def test_seed004_preconditions_and_a_verdict_they_gate():
    import pandas as pd

    from kdlib.studies.constrained_kd import Study, preconditions, verdicts

    table = pd.DataFrame([{"task": "t", "set": "test", "method": m, "kl": kl, "fac": fac, "cs": cs, "rwr": math.nan,
                           "rlr": math.nan}
                          for m, kl, fac, cs in (("start", 1.0, 40, 50), ("gkd", 0.1, 30, 99), ("minillm", 0.3, 31, 95),
                                                 ("cmdp", 0.2, 45, 95), ("grpo", 0.9, 46, 60))])
    curves = pd.DataFrame([{"task": "t", "method": "cmdp", "series": "share within budget d (ours)", "step": i,
                            "value": 0.3} for i in range(12)])
    start = {"t": {"start_steps": 100, "kl_dev_mean": 1.0, "ratio_to_d": 2.0, "cs_dev": 20.0}}
    study = Study(table=table, curves=curves, start=start, budget={"t": {"d": 0.5, "rule": "r"}},
                  examples=pd.DataFrame(), wins=pd.DataFrame(), judge="j", settings={})
    pre = {c["name"].split(": ", 1)[1].split(" (")[0]: c for c in preconditions(study)}
    red = pre["KL reduction by the KL-only methods"]
    assert red["value"] == pytest.approx(1.0 / 0.3) and not red["met"]  # the weaker method counts
    assert pre["start's mean dev KL / d"]["met"]
    assert pre["share of ours' samples above d, first 10 iterations"]["value"] == pytest.approx(0.7)
    line = next(v for v in verdicts(study) if "trade-off" in v)
    assert "NOT TESTED" in line and "KL reduction" in line
