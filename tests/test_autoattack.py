"""AutoAttack as an attack kind: the authors' ensemble, run through the suite's records."""

import numpy as np
import pydantic
import pytest
import torch

from suite.attacks import ATTACK_PARAMS, FIXED_BUDGET_KINDS, run_attack, summarize

pytestmark = pytest.mark.usefixtures("one_thread")
AA = ATTACK_PARAMS["autoattack"]


@pytest.fixture(scope="module")
def digits(mnist5k_splits):
    idx = np.random.default_rng(2).permutation(len(mnist5k_splits.test.x))[:24]
    return mnist5k_splits.test.x[idx], mnist5k_splits.test.y[idx], idx


def test_settings_default_to_the_mnist_eps_of_the_norm_and_custom_needs_attacks():
    assert AA().eps == [0.1, 0.2, 0.3] and AA().version == "standard"
    assert AA(norm="l2").eps == [1.0, 1.5, 2.0]
    assert "autoattack" in FIXED_BUDGET_KINDS
    with pytest.raises(pydantic.ValidationError, match="exactly when version"):
        AA(version="custom")
    with pytest.raises(pydantic.ValidationError, match="exactly when version"):
        AA(attacks=["apgd-ce"])
    with pytest.raises(pydantic.ValidationError, match="Input should be False"):
        AA(targeted=True)


@pytest.mark.parametrize(("norm", "eps"), [("linf", [0.05, 0.1]), ("l2", [1.0, 1.5])])
def test_autoattack_finds_at_least_what_pgd_finds_at_each_eps(trained_tiny, digits, norm, eps):
    x, y, idx = digits
    aa = run_attack(
        "autoattack",
        AA(norm=norm, eps=eps, version="custom", attacks=["apgd-ce", "apgd-t"], iterations=10),
        trained_tiny, x, y, idx, seed=0,
    )  # fmt: skip
    pgd = run_attack(
        f"pgd-{norm}", ATTACK_PARAMS[f"pgd-{norm}"](eps=eps, steps=10), trained_tiny, x, y, idx,
        seed=0,
    )  # fmt: skip
    ours, theirs = summarize(aa.records), summarize(pgd.records)
    for e in eps:
        assert ours[f"success_rate@eps={e:g}"] >= theirs[f"success_rate@eps={e:g}"]
    assert ours["success_rate"] > 0


def test_records_name_the_component_and_images_stay_in_the_ball(trained_tiny, digits):
    x, y, idx = digits
    before = torch.random.get_rng_state()
    params = AA(eps=[0.05, 0.1], iterations=5, square_queries=50)
    res = run_attack("autoattack", params, trained_tiny, x, y, idx, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched
    rec = res.records
    ok = rec["success"].to_numpy()
    assert ok.any() and set(rec.loc[ok, "component"]) <= {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert (rec.loc[~ok, "component"] == "").all()
    linf = (res.x_adv - x).flatten(1).abs().amax(1).double().numpy()
    assert (linf[ok] <= rec.loc[ok, "eps"].to_numpy() + 1e-5).all()
    with torch.inference_mode():
        assert (trained_tiny(res.x_adv).argmax(1).numpy() == rec["adv_pred"].to_numpy()).all()
    assert (rec.loc[rec["clean_correct"], "grad_evals"] > 0).all()
    again = run_attack("autoattack", params, trained_tiny, x, y, idx, seed=1)
    assert rec.equals(again.records)


@pytest.mark.parametrize("eps", [1.0, 1.5])
def test_autoattack_l2_robust_accuracy_is_at_most_what_cw_leaves_above_eps(
    trained_tiny, digits, eps
):
    """A stronger attack cannot find fewer adversarials: AutoAttack's L2 robust accuracy at ε is at
    most the share of digits classified correctly whose C&W minimal L2 exceeds ε (or which C&W
    failed on), all attacked digits in both denominators."""
    x, y, idx = digits
    aa = run_attack(
        "autoattack",
        AA(norm="l2", eps=[eps], version="custom", attacks=["apgd-ce", "apgd-t"], iterations=20),
        trained_tiny, x, y, idx, seed=0,
    ).records  # fmt: skip
    cw = run_attack(
        "cw-l2",
        ATTACK_PARAMS["cw-l2"](binary_steps=5, max_iterations=100, initial_const=0.1, lr=0.05),
        trained_tiny, x, y, idx, seed=0,
    ).records  # fmt: skip
    aa_robust = (aa["clean_correct"] & ~aa["success"]).mean()
    cw_above = (cw["clean_correct"] & ~(cw["success"] & (cw["l2"] <= eps))).mean()
    assert cw_above > 0  # a budget some digits survive under C&W: the bound is not trivial
    assert aa_robust <= cw_above
