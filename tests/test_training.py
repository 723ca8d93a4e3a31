"""Training: the temperature loss against a hand computation, determinism, divergence, optimisers."""

import math
from dataclasses import replace

import pytest
import torch

from suite.errors import TrainingError
from suite.models import build_model
from suite.training import Recipe, accuracy, distillation_loss, fit


def test_soft_target_loss_at_temperature_equals_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    t = 4.0
    expected = 0.0
    for row, target in zip(logits.tolist(), soft.tolist(), strict=True):
        z = [v / t for v in row]
        log_norm = math.log(sum(math.exp(v) for v in z))
        expected += -sum(p * (v - log_norm) for p, v in zip(target, z, strict=True))
    expected /= 2
    assert distillation_loss(logits, soft, t).item() == pytest.approx(expected, rel=1e-6)


def test_hard_label_loss_at_temperature_is_cross_entropy_of_scaled_logits():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0)) * 30
    labels = torch.tensor([0, 3, 9, 1, 1])
    want = torch.nn.functional.cross_entropy(logits / 50, labels)
    assert distillation_loss(logits, labels, 50.0).item() == pytest.approx(want.item(), rel=1e-6)
    # one-hot soft targets give the same loss as the hard labels
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    assert distillation_loss(logits, one_hot, 50.0).item() == pytest.approx(want.item(), rel=1e-6)


def _train(splits, seed, recipe):
    torch.manual_seed(seed)
    model = build_model("tiny", dropout=0.2)
    x, y = (
        splits.train.x[::4],
        splits.train.y[::4],
    )  # every 4th: all classes (splits are class-sorted)
    history = fit(
        model,
        x,
        y,
        y,
        recipe,
        seed=seed,
        evaluate=lambda m: (accuracy(m, splits.val.x, splits.val.y), 0.0),
    )
    return model, history


def test_same_seed_gives_bit_identical_weights_and_metrics(mnist5k_splits):
    recipe = Recipe(epochs=2, batch_size=64, lr=0.05)
    a, ha = _train(mnist5k_splits, 3, recipe)
    b, hb = _train(mnist5k_splits, 3, recipe)
    c, _ = _train(mnist5k_splits, 4, recipe)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert [(h.train_loss, h.val_acc) for h in ha] == [(h.train_loss, h.val_acc) for h in hb]
    assert not all(
        torch.equal(pa, pc)
        for pa, pc in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_both_optimisers_learn(mnist5k_splits, optimizer):
    recipe = Recipe(
        epochs=2, batch_size=32, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 3e-3
    )
    _, history = _train(mnist5k_splits, 0, recipe)
    assert history[-1].val_acc > 0.75
    assert history[-1].train_loss < history[0].train_loss


def test_divergence_fails_with_the_reason(mnist5k_splits):
    with pytest.raises(
        TrainingError, match=r"loss is (nan|inf) at epoch 1, batch \d+; lower train.lr"
    ):
        _train(mnist5k_splits, 0, Recipe(epochs=1, batch_size=64, lr=1e12, momentum=0.9))


def test_mixed_precision_learns_as_float32_does_and_returns_a_float32_model(mnist5k_splits):
    """train.precision = "bf16" (autocast, channels-last) reaches float32's validation accuracy
    within two points on real digits, and hands back an ordinary float32 model: contiguous weights
    whose float32 predictions are what evaluation and the attacks see."""
    recipe = Recipe(epochs=2, batch_size=32, optimizer="adam", lr=3e-3)
    _, fp32 = _train(mnist5k_splits, 0, recipe)
    model, bf16 = _train(mnist5k_splits, 0, replace(recipe, precision="bf16"))
    assert bf16[-1].val_acc > 0.75
    assert abs(bf16[-1].val_acc - fp32[-1].val_acc) < 0.02
    assert bf16[-1].train_loss < bf16[0].train_loss
    for p in model.parameters():
        assert p.dtype == torch.float32 and p.is_contiguous()
    x = mnist5k_splits.val.x[:64]
    assert model(x).dtype == torch.float32
