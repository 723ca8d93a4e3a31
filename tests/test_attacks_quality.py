"""Do the attacks find what they promise: adversarials, of (near-)minimal size, in their norm?"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suite.attacks import ATTACK_PARAMS, L0_TOLERANCE, run_attack

N = 12
COSINE = {"lr": 0.1, "max_iterations": 400, "lr_schedule": "cosine", "lr_warmup": 100}
COSINE |= {"abort_failing": True, "abort_window": 20}  # the manifests' C&W L2, at 5 binary steps
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def correct(trained_tiny, mnist5k_splits):
    """N test images the tiny net classifies correctly (a seeded draw)."""
    x, y = mnist5k_splits.test.x, mnist5k_splits.test.y
    order = np.random.default_rng(2).permutation(len(x))
    with torch.inference_mode():
        ok = (trained_tiny(x[order]).argmax(1) == y[order]).numpy()
    idx = order[ok][:N]
    return x[idx], y[idx], idx


def attack(kind, model, data, n=N, **params):
    x, y, idx = data
    p = ATTACK_PARAMS[kind](**params)
    return run_attack(kind, p, model, x[:n], y[:n], idx[:n], seed=0)


@pytest.fixture(scope="module")
def cw_l2(trained_tiny, correct):
    # the paper's procedure to its full budget, 9 × 1,000 (the reference the other attacks meet)
    return attack("cw-l2", trained_tiny, correct, binary_steps=9, max_iterations=1000)


@pytest.fixture(scope="module")
def pgd_l2(trained_tiny, correct):
    eps = np.round(np.arange(0.1, 4.01, 0.1), 2).tolist()
    return attack("pgd-l2", trained_tiny, correct, eps=eps, steps=50)


def test_cw_l2_fools_every_sample_and_reports_what_it_returns(trained_tiny, correct, cw_l2):
    x, y, _ = correct
    rec = cw_l2.records
    assert rec["success"].mean() >= 0.99
    assert cw_l2.x_adv.min() >= 0 and cw_l2.x_adv.max() <= 1
    with torch.inference_mode():
        pred = trained_tiny(cw_l2.x_adv).argmax(1)
    assert (pred != y).all() and (pred.numpy() == rec["adv_pred"].to_numpy()).all()
    l2 = (cw_l2.x_adv.double() - x.double()).flatten(1).norm(dim=1).numpy()
    np.testing.assert_allclose(rec["l2"], l2, rtol=1e-12)
    assert (rec["const"] > 0).all() and (rec["grad_evals"] > 0).all()


def test_cw_l2_is_smaller_than_the_smallest_pgd_budget_that_works(cw_l2, pgd_l2):
    ours, eps = cw_l2.records["l2"].to_numpy(), pgd_l2.records["eps"].to_numpy()
    both = ~np.isnan(ours) & ~np.isnan(eps)
    assert both.sum() >= N - 2
    assert np.median(ours[both]) < np.median(eps[both])
    assert (ours[both] <= eps[both]).mean() >= 0.9


def test_more_binary_search_steps_never_give_larger_l2(trained_tiny, correct, cw_l2):
    fewer = attack("cw-l2", trained_tiny, correct, binary_steps=5, max_iterations=1000)
    a, b = cw_l2.records["l2"].to_numpy(), fewer.records["l2"].to_numpy()
    found = ~np.isnan(b)
    assert not np.isnan(a[found]).any()
    assert (a[found] <= b[found] * (1 + 1e-4)).all()
    assert np.median(a) <= np.median(b[found])


def test_cw_l2_cosine_decay_at_lr_01_beats_a_constant_step_and_the_papers_budget(
    trained_tiny, correct, cw_l2
):
    """lr 0.1 warmed up, then decayed by a cosine within each search step (the manifests' C&W L2,
    bench/attack_vs_foolbox.py's "short"): per digit no larger than the same budget at a constant
    lr 0.1, whose last steps are too coarse to settle on the boundary, and a median within 0.1%
    of 9 × 1,000 at the paper's lr 0.01, for under a third of
    5 × 1,000's gradient evaluations."""
    short = {**COSINE, "binary_steps": 5, "initial_const": 0.01}
    cosine = attack("cw-l2", trained_tiny, correct, **short).records
    constant = attack("cw-l2", trained_tiny, correct, **short | {"lr_schedule": "constant"}).records
    assert cosine["success"].all() and constant["success"].all()
    ratio = cosine["l2"].to_numpy() / constant["l2"].to_numpy()
    assert (ratio <= 1).mean() >= 0.9 and np.median(ratio) < 0.997  # here 12 of 12, 0.995
    # within 0.1% of the paper's budget: this install (numpy 2.4.6, pandas 3.1.2) puts the two
    # medians 0.01% apart, the other side of equal from the earlier installs
    assert cosine["l2"].median() <= 1.001 * cw_l2.records["l2"].median()
    assert 3 * cosine["grad_evals"].mean() < 5 * 1000  # here 1,173 per digit


def test_targeted_cw_l2_lands_on_the_target(trained_tiny, correct):
    res = attack(
        "cw-l2", trained_tiny, correct, n=8, binary_steps=6, max_iterations=300,
        targeted=True, target_mode="next",
    )  # fmt: skip
    rec = res.records
    assert (rec["target"] == (rec["label"] + 1) % 10).all()
    assert rec["success"].mean() >= 0.99
    assert (rec["adv_pred"] == rec["target"]).all()


def test_ddn_reaches_cw_l2_distortion_with_far_fewer_gradients(trained_tiny, correct, cw_l2):
    res = attack("ddn", trained_tiny, correct, steps=200)
    ddn, cw = res.records, cw_l2.records
    assert ddn["success"].all()
    assert ddn["l2"].median() <= 1.03 * cw["l2"].median()
    assert ddn["grad_evals"].mean() * 5 <= cw["grad_evals"].mean()


def test_fmn_is_adv_libs_fmn_at_the_papers_rule_and_reaches_cw_l2_at_ours(
    trained_tiny, correct, cw_l2, monkeypatch
):
    """FMN with the paper's boundary estimate returns adv-lib's images bit for bit (the
    implementation FMN's authors point to). That estimate approaches the boundary from inside and
    here never crosses it in 100 steps; our overshoot does, at C&W L2's distortion."""
    pytest.importorskip("adv_lib", reason="pip install --no-deps adv-lib==0.2.8 (make install)")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from l2_ensemble_vs_fmn import adv_lib_fmn

    x, y, _ = correct
    reference = adv_lib_fmn()(trained_tiny, x, y, norm=2, steps=100)
    paper = attack("fmn", trained_tiny, correct, steps=100, boundary_overshoot=1.0)
    assert torch.equal(paper.x_adv, reference)
    ours = attack("fmn", trained_tiny, correct, steps=200).records
    assert ours["success"].sum() >= max(paper.records["success"].sum(), N - 1)
    assert ours["l2"].median() <= 1.03 * cw_l2.records["l2"].median()
    assert (ours["grad_evals"] == 200).all()


def test_fmn_linf_is_adv_libs_linf_fmn_and_finds_pgds_smallest_eps(
    trained_tiny, correct, monkeypatch
):
    """At L∞, FMN with the paper's boundary estimate is adv-lib's `fmn(norm=inf)` to float
    rounding; ours fools every digit at an L∞ no larger than the smallest ε (of a 0.01 grid) at
    which PGD-50 fools it."""
    pytest.importorskip("adv_lib", reason="pip install --no-deps adv-lib==0.2.8 (make install)")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    from l2_ensemble_vs_fmn import adv_lib_fmn

    x, y, _ = correct
    reference = adv_lib_fmn()(trained_tiny, x, y, norm=float("inf"), steps=100)
    paper = attack("fmn-linf", trained_tiny, correct, steps=100, boundary_overshoot=1.0)
    torch.testing.assert_close(paper.x_adv, reference, rtol=0, atol=1e-6)
    ours = attack("fmn-linf", trained_tiny, correct, steps=200).records
    eps = np.round(np.arange(0.01, 0.41, 0.01), 2).tolist()
    pgd = attack("pgd-linf", trained_tiny, correct, eps=eps).records
    assert ours["success"].all() and pgd["success"].all()
    assert (ours["linf"].to_numpy() <= pgd["eps"].to_numpy() + 1e-6).mean() >= 0.9
    assert ours["linf"].median() <= pgd["eps"].median()


def test_cw_l0_changes_only_the_pixels_it_counts_and_few_of_them(trained_tiny, correct, cw_l2):
    x, _, _ = correct
    res = attack("cw-l0", trained_tiny, correct, n=6, max_iterations=50, largest_const=1e3)
    rec = res.records
    assert rec["success"].all()
    delta = (res.x_adv.double() - x[:6].double()).flatten(1).abs()
    np.testing.assert_array_equal(rec["l0"], (delta > L0_TOLERANCE).sum(1).numpy())
    uncounted = torch.where(delta > L0_TOLERANCE, 0.0, delta).norm(dim=1)
    assert (uncounted < 1e-4).all()
    assert rec["l0"].median() * 5 < cw_l2.records["l0"][:6].median()


def test_cw_linf_is_within_pgd_budget(trained_tiny, correct):
    # c starts at 1e-2 rather than the paper's 1e-5: it skips ten doublings that fail anyway
    res = attack("cw-linf", trained_tiny, correct, n=4, max_iterations=200, initial_const=1e-2)
    eps = np.round(np.arange(0.01, 0.41, 0.01), 2).tolist()
    pgd = attack("pgd-linf", trained_tiny, correct, n=4, eps=eps)
    ours, eps = res.records["linf"].to_numpy(), pgd.records["eps"].to_numpy()
    assert res.records["success"].all() and not np.isnan(eps).any()
    assert (ours <= 1.1 * eps).all()


def test_cw_l2_is_as_good_as_foolbox(trained_tiny, correct):
    fb = pytest.importorskip("foolbox", reason="foolbox is the independent C&W reference")
    x, y, _ = (t[:8] for t in correct)
    ours = attack("cw-l2", trained_tiny, correct, n=8, binary_steps=5, max_iterations=200).records
    reference = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=200)
    _, adv, ok = reference(fb.PyTorchModel(trained_tiny, bounds=(0, 1)), x, y, epsilons=None)
    # foolbox's placeholder for "nothing found" is the all-zero image, which it counts as a success
    theirs = ok & (adv.flatten(1).abs().amax(1) > 0)
    both = torch.tensor(ours["success"].to_numpy()) & theirs
    assert ours["success"].mean() >= theirs.float().mean().item() and both.sum() >= 6
    their_l2 = (adv - x).flatten(1).norm(dim=1)[both].numpy()
    assert ours["l2"][both.numpy()].median() <= 1.05 * np.median(their_l2)


def _train_tiny_at(x, targets, temperature: float):
    """The `tiny` net trained 4 epochs with Adam on softmax(logits / T) against `targets`
    (labels or probabilities): defensive distillation's teacher and student recipe."""
    from suite.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny", dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]) / temperature, targets[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def t100_student(mnist5k_splits):
    """A T = 100 defensively distilled tiny student: its deployed softmax saturates."""
    x, y = mnist5k_splits.train.x, mnist5k_splits.train.y
    teacher = _train_tiny_at(x, y, 100.0)
    with torch.inference_mode():
        soft = F.softmax(teacher(x) / 100.0, dim=1)
    return _train_tiny_at(x, soft, 100.0)


def test_every_minimal_norm_l2_attack_survives_defensive_distillation(t100_student, mnist5k_splits):
    x, y = mnist5k_splits.test.x, mnist5k_splits.test.y
    order = np.random.default_rng(3).permutation(len(x))[:40]
    with torch.inference_mode():
        ok = (t100_student(x[order]).argmax(1) == y[order]).numpy()
    data = (x[order[ok]], y[order[ok]], order[ok])
    n = len(data[0])
    cw = attack("cw-l2", t100_student, data, n=n, binary_steps=5, max_iterations=200).records
    assert cw["success"].mean() >= 0.9
    cw_won = cw["success"].to_numpy()
    manifests_cw = {**COSINE, "binary_steps": 5}
    for kind, params in (("ddn", {"steps": 200}), ("fmn", {"steps": 200}), ("cw-l2", manifests_cw)):
        found = attack(kind, t100_student, data, n=n, **params).records
        assert found["success"].to_numpy()[cw_won].mean() >= 0.99, kind
    # the student does mask gradients: DDN on the paper's cross-entropy fails where C&W wins
    ce = attack("ddn", t100_student, data, n=n, steps=200, loss="ce").records
    assert ce["success"].to_numpy()[cw_won].mean() < 0.5


def test_pgd_restarts_only_add_rows_and_keep_the_first_starts_draws(trained_tiny, mnist5k_splits):
    """A restart runs only on the rows the earlier starts left robust, from a new random start:
    with 10 starts PGD fools a superset of what one start fools, the rows one start fooled get the
    very same image, and a restarted row costs one more start's gradients."""
    x, y = mnist5k_splits.test.x[:60], mnist5k_splits.test.y[:60]
    data = (x, y, np.arange(60))
    kw = {"eps": [0.08], "steps": 1, "step_size": 1.0}  # one step: the start decides
    one = attack("pgd-linf", trained_tiny, data, n=60, **kw)
    ten = attack("pgd-linf", trained_tiny, data, n=60, restarts=10, **kw)
    first, more = one.records["success"].to_numpy(), ten.records["success"].to_numpy()
    assert (more >= first).all() and more.sum() > first.sum()
    assert torch.equal(
        ten.x_adv[torch.from_numpy(first.copy())], one.x_adv[torch.from_numpy(first.copy())]
    )
    evals = ten.records["grad_evals"].to_numpy()
    attacked = one.records["clean_correct"].to_numpy() & ~first
    assert (evals[attacked] > 1).all() and (evals[attacked] <= 10).all()
