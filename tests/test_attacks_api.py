"""suite.attacks plumbing: settings, records, targets, verification, batching, diagnostics."""

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch
from torch import nn

from suite.attacks import ATTACK_PARAMS, run_attack, summarize
from suite.attacks.diagnostics import saturated_fraction, softmax_gradient_norms
from suite.attacks.targets import choose_targets, rows_per_sample

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = {
    "cw-l2", "cw-linf", "cw-l0", "ddn", "fmn", "fmn-linf", "pgd-linf", "pgd-l2", "fgsm",
    "autoattack",
}  # fmt: skip
SMALL = {
    "cw-l2": {"binary_steps": 3, "max_iterations": 50},
    "cw-linf": {"max_iterations": 20},
    "cw-l0": {"max_iterations": 20},
    "ddn": {"steps": 20},
    "fmn": {"steps": 20},
    "fmn-linf": {"steps": 20},
    "pgd-linf": {"steps": 5, "eps": [0.1, 0.3]},
    "pgd-l2": {"steps": 5, "eps": [1.0, 3.0]},
    "fgsm": {"eps": [0.1, 0.3]},
    "autoattack": {"eps": [0.1, 0.3], "iterations": 5, "square_queries": 20},
}


@pytest.fixture(scope="module")
def test_batch(mnist5k_splits):
    idx = np.random.default_rng(1).permutation(len(mnist5k_splits.test.x))[:40]
    return mnist5k_splits.test.x[idx], mnist5k_splits.test.y[idx], idx


class Constant(nn.Module):
    """Always says class 3; its input gradient is exactly zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.tensor([0.0, 1.0, 2.0, 5.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0])
        return logits + 0.0 * x.flatten(1).sum(1, keepdim=True)


class Scaled(nn.Module):
    """`inner` with its logits multiplied by `factor`: same decisions, a saturated softmax."""

    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * self.inner(x)


def test_every_kind_has_forbidding_params_with_defaults():
    assert set(ATTACK_PARAMS) == KINDS
    for kind, cls in ATTACK_PARAMS.items():
        cls.model_validate({})
        dumped = cls.model_validate(SMALL[kind]).model_dump(mode="json")
        assert cls.model_validate(dumped).model_dump(mode="json") == dumped  # jobs re-validate
        with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
            cls.model_validate({"no_such_setting": 1})
        assert cls.model_validate(SMALL[kind]).targeted is False


@pytest.mark.parametrize(
    ("kind", "bad", "message"),
    [
        ("cw-l2", {"lr": 0}, "greater than 0"),
        ("cw-l2", {"binary_steps": 0}, "greater than or equal to 1"),
        ("cw-l2", {"target_mode": "nearest"}, "'random', 'next', 'least-likely' or 'all'"),
        ("cw-l2", {"lr_warmup": 20}, 'lr_warmup set: add lr_schedule = "cosine"'),
        ("pgd-linf", {"eps": []}, "at least 1 item"),
        ("pgd-linf", {"restarts": 2, "random_start": False}, "restarts > 1 needs random_start"),
        ("pgd-l2", {"eps": [1.0, -0.5]}, "greater than 0"),
        ("fgsm", {"steps": 3}, "Extra inputs"),
    ],
)
def test_bad_settings_say_what_is_wrong(kind, bad, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        ATTACK_PARAMS[kind].model_validate(bad)


def test_records_schema_and_clean_mistakes(trained_tiny, test_batch):
    x, y, idx = test_batch
    y = y.clone()
    y[:5] = (y[:5] + 1) % 10  # five samples the model now gets wrong when clean
    params = ATTACK_PARAMS["pgd-linf"](eps=[0.05, 0.1, 0.2, 0.3])
    res = run_attack("pgd-linf", params, trained_tiny, x, y, idx, seed=0)
    rec = res.records
    assert list(rec.columns) == [
        "sample_index", "label", "target", "clean_pred", "adv_pred", "clean_correct",
        "success", "l0", "l2", "linf", "const", "grad_evals", "eps", "norm",
    ]  # fmt: skip
    assert rec["success"].dtype == bool and rec["clean_correct"].dtype == bool
    assert rec["grad_evals"].dtype == np.int64 and rec["l2"].dtype == np.float64
    assert rec["target"].isna().all() and (rec["sample_index"].to_numpy() == idx).all()
    assert res.x_adv.shape == x.shape and res.x_adv.min() >= 0 and res.x_adv.max() <= 1

    wrong = ~rec["clean_correct"].to_numpy()
    assert wrong[:5].all()
    assert not rec.loc[wrong, "success"].any()
    assert rec.loc[wrong, ["l0", "l2", "linf", "eps"]].isna().all().all()
    assert (rec.loc[wrong, "grad_evals"] == 0).all()
    assert torch.equal(res.x_adv[torch.from_numpy(wrong)], x[torch.from_numpy(wrong)])

    ok = rec["success"].to_numpy()
    assert ok.sum() >= 30
    with torch.inference_mode():
        pred = trained_tiny(res.x_adv).argmax(1).numpy()
    assert (pred == rec["adv_pred"].to_numpy()).all()
    assert (pred[ok] != rec["label"].to_numpy()[ok]).all()
    linf = (res.x_adv - x).flatten(1).abs().amax(1).double().numpy()
    np.testing.assert_allclose(rec.loc[ok, "linf"], linf[ok], rtol=0, atol=1e-12)
    assert (linf[ok] <= rec.loc[ok, "eps"].to_numpy() + 1e-5).all()
    assert (rec.loc[~ok, "l2"].isna()).all()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_model_that_cannot_be_fooled_gives_failures_not_zeros(kind):
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.full((6,), 3)
    params = ATTACK_PARAMS[kind].model_validate(SMALL[kind])
    res = run_attack(kind, params, Constant(), x, y, np.arange(6), seed=0)
    rec = res.records
    assert rec["clean_correct"].all() and not rec["success"].any()
    assert rec[["l0", "l2", "linf", "const"]].isna().all().all()
    assert torch.equal(res.x_adv, x)
    summary = summarize(rec)
    assert summary["success_rate"] == 0.0 and np.isnan(summary["median_l2"])


def test_summarize_counts_only_clean_correct_and_successes():
    rec = pd.DataFrame(
        {
            "clean_correct": [True, True, True, True, False],
            "success": [True, True, False, True, False],
            "l0": [10.0, 20.0, np.nan, 30.0, np.nan],
            "l2": [1.0, 2.0, np.nan, 4.0, np.nan],
            "linf": [0.1, 0.2, np.nan, 0.4, np.nan],
            "eps": [0.1, 0.3, np.nan, 0.3, np.nan],
        }
    )
    rec.attrs["eps_list"] = [0.05, 0.1, 0.3]
    s = summarize(rec)
    assert s["n_attacked"] == 5 and s["n_clean_correct"] == 4
    assert s["success_rate"] == 0.75
    assert s["median_l2"] == 2.0 and s["mean_l2"] == pytest.approx(7 / 3)
    assert s["median_l0"] == 20.0 and s["median_linf"] == pytest.approx(0.2)
    assert s["success_rate@eps=0.05"] == 0.0
    assert s["success_rate@eps=0.1"] == 0.25
    assert s["success_rate@eps=0.3"] == 0.75


def test_targets_never_the_label_and_random_ones_do_not_depend_on_batching():
    y = torch.tensor([0, 3, 9, 3, 7])
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    index = np.array([11, 4, 7, 40, 2])
    rows, t = choose_targets("all", y, logits, 0, index)
    assert len(rows) == 45 and (t != y[rows]).all()
    for i in range(5):
        assert sorted(t[rows == i].tolist()) == sorted(set(range(10)) - {int(y[i])})
    cw = ATTACK_PARAMS["cw-l2"]
    assert rows_per_sample(cw(targeted=True, target_mode="all"), 10) * 5 == len(rows)
    assert rows_per_sample(cw(targeted=True, target_mode="next"), 10) == 1
    assert rows_per_sample(cw(), 10) == rows_per_sample(ATTACK_PARAMS["ddn"](), 10) == 1
    _, t = choose_targets("next", y, logits, 0, index)
    assert t.tolist() == [1, 4, 0, 4, 8]
    _, t = choose_targets("least-likely", y, logits, 0, index)
    assert (t == logits.argmin(1)).all()
    logits[0, :] = 0  # all tied: the least likely must still not be the label
    _, t = choose_targets("least-likely", y, logits, 0, index)
    assert t[0] != y[0]
    _, t = choose_targets("random", y, logits, 0, index)
    _, t_one = choose_targets("random", y[2:3], logits[2:3], 0, index[2:3])
    _, t_other_seed = choose_targets("random", y, logits, 1, index)
    assert (t != y).all() and t[2] == t_one[0] and not torch.equal(t, t_other_seed)


def test_progress_callback_and_targeted_records(trained_tiny, test_batch):
    x, y, idx = test_batch
    calls = []
    params = ATTACK_PARAMS["fgsm"](eps=[0.1, 0.3], targeted=True, target_mode="all")
    res = run_attack(
        "fgsm", params, trained_tiny, x[:4], y[:4], idx[:4], seed=0, batch_size=10,
        on_batch=lambda done, ok: calls.append((done, ok)),
    )  # fmt: skip
    rec = res.records
    assert len(rec) == 36 and res.x_adv.shape[0] == 36
    assert [c[0] for c in calls] == [10, 20, 30, 36]
    assert calls[-1][1] == int(rec["success"].sum())
    assert (rec["sample_index"].to_numpy() == np.repeat(idx[:4], 9)).all()
    hit = rec["success"].to_numpy()
    assert (rec.loc[hit, "adv_pred"] == rec.loc[hit, "target"]).all()


class OneByOne(nn.Module):
    """`inner` applied to one sample at a time: its outputs do not depend on the batch (a batched
    conv differs in the last bits), so any difference batching makes comes from the attack."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(xi[None]) for xi in x])


BATCHING = {  # budgets small enough for a per-sample model, large enough to succeed
    "cw-l2": {"binary_steps": 2, "max_iterations": 150, "initial_const": 1.0},
    "cw-linf": {"max_iterations": 20, "initial_const": 1e-2, "largest_const": 1.0},
    "cw-l0": {"max_iterations": 10, "initial_const": 0.1, "largest_const": 10.0},
}


# AutoAttack draws its random starts per call (the authors' code), so its batches are not
# independent; checkpoints name the batch size instead (attacking._attack_in_checkpointed_chunks).
@pytest.mark.parametrize("kind", sorted(KINDS - {"autoattack"}))
def test_batched_equals_one_at_a_time(trained_tiny, test_batch, kind):
    x, y, idx = (t[:3] for t in test_batch)
    model = OneByOne(trained_tiny)
    params = ATTACK_PARAMS[kind].model_validate(BATCHING.get(kind, SMALL[kind]))
    together = run_attack(kind, params, model, x, y, idx, seed=3)
    alone = run_attack(kind, params, model, x, y, idx, seed=3, batch_size=1)
    assert together.records["success"].any()
    assert together.records.equals(alone.records)
    assert torch.equal(together.x_adv, alone.x_adv)


def test_same_seed_same_result_other_seed_other_start(trained_tiny, test_batch):
    x, y, idx = test_batch
    params = ATTACK_PARAMS["pgd-linf"](eps=[0.05, 0.1], steps=3)
    first = run_attack("pgd-linf", params, trained_tiny, x, y, idx, seed=5)
    again = run_attack("pgd-linf", params, trained_tiny, x, y, idx, seed=5)
    other = run_attack("pgd-linf", params, trained_tiny, x, y, idx, seed=6)
    assert torch.equal(first.x_adv, again.x_adv)
    assert first.records.equals(again.records)
    assert not torch.equal(first.x_adv, other.x_adv)


def test_gradient_masking_diagnostic(trained_tiny, test_batch):
    x, y, _ = test_batch
    normal = softmax_gradient_norms(trained_tiny, x, y)

    saturated = softmax_gradient_norms(Scaled(trained_tiny, 1e4), x, y)
    assert normal.dtype == torch.float64 and normal.shape == (len(x),)
    assert saturated_fraction(normal) == 0.0
    correct = trained_tiny(x).argmax(1) == y
    assert (saturated[correct] == 0).float().mean() >= 0.9
    assert saturated_fraction(saturated) >= 0.8
    assert saturated_fraction(torch.tensor([0.0, 1e-12, 1e-3, 1.0])) == 0.5


def test_cw_saver_saves_evaluations_at_no_cost_and_keeps_stored_hashes(
    trained_tiny, mnist5k_splits
):
    """Ending a search step that found no adversarial (`abort_failing`): fewer gradient
    evaluations, the same successes and median L2 within 0.2%; off, the config hash of results
    stored before the option existed is unchanged, and so is that of results stored while the
    rejected `abort_early` and `abort_converged` were settings (both off)."""
    from suite.identity import config_hash

    idx = np.arange(40)
    x, y = mnist5k_splits.test.x[idx], mnist5k_splits.test.y[idx]
    settings = {"binary_steps": 5, "max_iterations": 400, "initial_const": 1e-3, "lr": 0.05}
    full = ATTACK_PARAMS["cw-l2"](**settings)
    a = run_attack("cw-l2", full, trained_tiny, x, y, idx, seed=0).records
    assert a.loc[a["clean_correct"], "success"].mean() == 1.0
    fast = ATTACK_PARAMS["cw-l2"](**settings, abort_failing=True)
    b = run_attack("cw-l2", fast, trained_tiny, x, y, idx, seed=0).records
    assert b["success"].tolist() == a["success"].tolist()
    assert b["l2"].median() <= 1.002 * a["l2"].median()
    assert b["grad_evals"].mean() < 0.7 * a["grad_evals"].mean()
    assert config_hash(fast) != config_hash(full)
    before = full.model_dump(mode="json")
    for later in ("abort_failing", "lr_schedule", "lr_final", "lr_warmup"):
        before.pop(later)  # the settings as hashed before the options existed
    before["abort_early"] = False  # and as they were hashed while the early abort was a setting
    assert config_hash(full) == config_hash(before)


class _ReadCounter(nn.Module):
    """`inner`, counting its forward passes (one per attack iteration) and noting the iteration of
    every read of a tensor's value on the host: `if tensor`, `.item()`, `.tolist()`, `.nonzero()`
    and boolean-mask indexing. On a GPU each such read waits for the device to finish."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.forwards, self.reads_at = inner, 0, set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.inner(x)

    def watch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def counted(name: str, reads) -> None:
            original = getattr(torch.Tensor, name)

            def wrapper(t, *args, **kwargs):
                if reads(args):
                    self.reads_at.add(self.forwards)
                return original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, wrapper)

        def bool_index(args) -> bool:
            index = args[0] if isinstance(args[0], tuple) else (args[0],)
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)

        for name in ("__bool__", "item", "tolist", "nonzero"):
            counted(name, lambda args: True)
        for name in ("__getitem__", "__setitem__"):
            counted(name, bool_index)


@pytest.mark.parametrize("kind", ["cw-l2", "cw-linf", "cw-l0"])
def test_cw_loops_read_the_device_only_every_sync_every_iterations(
    trained_tiny, test_batch, kind, monkeypatch
):
    """The C&W loops decide per sample with masks and read a value on the host only when they
    drop finished samples, every SYNC_EVERY iterations: on a GPU the loop never waits in between."""
    from suite.attacks.kinds import attack_kind
    from suite.attacks.search import SYNC_EVERY

    x, y, idx = (t[:4] for t in test_batch)
    settings = {
        "cw-l2": {"binary_steps": 3},
        "cw-linf": {"initial_const": 1e-2},
        "cw-l0": {"largest_const": 10.0},
    }
    params = ATTACK_PARAMS[kind](max_iterations=120, **settings.get(kind, {}))
    model = _ReadCounter(trained_tiny)
    model.watch(monkeypatch)
    found = attack_kind(kind).attack(
        model=model, x=x, y=y, target=None, params=params, seed=0, keys=idx
    )
    monkeypatch.undo()
    assert (found.grad_evals > 2 * SYNC_EVERY).all()  # each sample ran through several syncs
    assert model.forwards > 2 * SYNC_EVERY
    assert model.reads_at and {i % SYNC_EVERY for i in model.reads_at} == {0}


def test_pgd_with_one_start_hashes_as_the_pgd_from_before_restarts_existed():
    """`restarts = 1` is PGD as it ran before the setting existed (same draws, same images), so its
    results stored then stay reusable: the setting at 1 is left out of the hash."""
    from suite.identity import config_hash

    params = ATTACK_PARAMS["pgd-linf"](eps=[0.1, 0.3], steps=40, step_size=0.0625)
    before = {k: v for k, v in params.model_dump(mode="json").items() if k != "restarts"}
    assert config_hash(params) == config_hash(before)
    assert config_hash(params.model_copy(update={"restarts": 2})) != config_hash(before)
