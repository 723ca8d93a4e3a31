"""Dataset distillation on real mnist-5k digits: each method lowers its own objective, the sets
are well formed, a distilled set teaches more than noise, coresets are real images, divergence
raises."""

import warnings

import pytest
import torch

from suite.distill import (
    ConvNet,
    DCParams,
    DDParams,
    DMParams,
    EvalRecipe,
    HerdingParams,
    RandomParams,
    distill,
    dsa,
    train_on_synthetic,
)
from suite.distill.dc import gradient_distance
from suite.errors import TrainingError

# Small CPU settings under which each objective falls clearly within the run (noise init).
SMALL = {
    "dm": (DMParams(iterations=10, batch_real=32, net_width=16), 2),
    "dc": (DCParams(iterations=12, batch_real=32, net_width=16), 1),
    "dd": (
        DDParams(iterations=24, batch_real=128, net_width=16, epochs=3, lr_img=0.2, init_lr=0.2),
        1,
    ),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is far faster


@pytest.fixture(scope="module")
def learned(mnist5k_splits):
    """Each learned method run once at its SMALL settings, with the on_step calls it made."""
    train = mnist5k_splits.train
    runs = {}
    for method, (params, ipc) in SMALL.items():
        calls = []
        result = distill(
            method,
            params,
            train.x,
            train.y,
            ipc=ipc,
            init="noise",
            seed=0,
            on_step=lambda i, n, loss, calls=calls: calls.append((i, n, loss)),
        )
        runs[method] = (result, ipc, calls)
    return runs


def _mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize("method", ["dm", "dc", "dd"])
def test_each_method_lowers_its_objective(learned, method):
    curve = learned[method][0].loss_curve
    first, last = _mean(curve[:5]), _mean(curve[-5:])
    assert last < 0.97 * first, f"{method}: first {first:.4f} → last {last:.4f}"


@pytest.mark.parametrize("method", ["dm", "dc", "dd"])
def test_learned_set_is_well_formed(learned, method):
    result, ipc, calls = learned[method]
    params = SMALL[method][0]
    assert result.x_syn.shape == (10 * ipc, 1, 28, 28)
    assert result.x_syn.device.type == "cpu"
    assert result.x_syn.min() >= 0 and result.x_syn.max() <= 1
    assert result.y_syn.dtype == torch.int64
    assert result.y_syn.tolist() == [c for c in range(10) for _ in range(ipc)]
    assert len(result.loss_curve) == params.iterations
    assert [(i, n) for i, n, _ in calls] == [
        (i, params.iterations) for i in range(1, params.iterations + 1)
    ]
    assert [loss for *_, loss in calls] == result.loss_curve
    if method == "dd":
        assert result.lrs.shape == (ipc * params.epochs,) and (result.lrs > 0).all()
    else:
        assert result.lrs is None


def test_dm_set_teaches_more_than_noise(mnist5k_splits):
    s = mnist5k_splits
    params = DMParams(iterations=10, batch_real=32, net_width=16)
    result = distill("dm", params, s.train.x, s.train.y, ipc=10, init="noise", seed=0)
    assert result.x_syn.shape == (100, 1, 28, 28)
    noise = torch.rand(result.x_syn.shape, generator=torch.Generator().manual_seed(0))

    def test_accuracy(x_train):
        torch.manual_seed(0)
        model = ConvNet(width=16)
        recipe = EvalRecipe(optimizer="sgd", lr=0.01, epochs=50, augment=False)
        train_on_synthetic(model, x_train, result.y_syn, recipe, seed=0)
        with torch.no_grad():
            return (model(s.test.x).argmax(1) == s.test.y).float().mean().item()

    distilled, baseline = test_accuracy(result.x_syn), test_accuracy(noise)
    assert distilled > baseline + 0.2, f"DM {distilled:.3f} vs noise {baseline:.3f}"


@pytest.mark.parametrize("method", ["random", "herding"])
def test_coresets_are_training_images(mnist5k_splits, method):
    train = mnist5k_splits.train
    params = RandomParams() if method == "random" else HerdingParams(net_width=32)
    result = distill(method, params, train.x, train.y, ipc=3, init="real", seed=1)
    assert result.x_syn.shape == (30, 1, 28, 28)
    assert result.y_syn.tolist() == [c for c in range(10) for _ in range(3)]
    assert result.loss_curve == [] and result.lrs is None
    flat = train.x.flatten(1)
    for image, label in zip(result.x_syn.flatten(1), result.y_syn, strict=True):
        rows = (flat == image).all(dim=1).nonzero().flatten()
        assert len(rows) >= 1 and (train.y[rows] == label).all()
    assert len({tuple(r.tolist()) for r in result.x_syn.flatten(1)}) == 30


@pytest.mark.parametrize("method", ["random", "herding"])
def test_coreset_picks_are_deterministic_for_a_seed(mnist5k_splits, method):
    train = mnist5k_splits.train
    params = RandomParams() if method == "random" else HerdingParams(net_width=16)

    def picks(seed):
        return distill(method, params, train.x, train.y, ipc=2, init="real", seed=seed).x_syn

    first = picks(3)
    assert torch.equal(first, picks(3))
    assert not torch.equal(first, picks(4))


def test_learned_set_is_deterministic_for_a_seed(mnist5k_splits):
    train = mnist5k_splits.train
    params = DMParams(iterations=3, batch_real=16, net_width=8)
    a, b = (distill("dm", params, train.x, train.y, ipc=1, init="real", seed=5) for _ in "ab")
    assert torch.equal(a.x_syn, b.x_syn) and a.loss_curve == b.loss_curve


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("dm", DMParams(iterations=20, batch_real=16, net_width=8, lr_img=1e30)),
        ("dc", DCParams(iterations=20, batch_real=16, net_width=8, lr_img=1e30)),
        ("dd", DDParams(iterations=20, batch_real=16, net_width=8, init_lr=1e8)),
    ],
)
def test_divergence_raises_training_error(mnist5k_splits, method, params):
    train = mnist5k_splits.train
    with pytest.raises(TrainingError, match=rf"^{method}: loss became (nan|inf) at iteration \d+"):
        distill(method, params, train.x, train.y, ipc=1, init="noise", seed=0)


def test_train_on_synthetic_raises_on_divergence(mnist5k_splits):
    train = mnist5k_splits.train
    torch.manual_seed(0)
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at epoch \d+"):
        train_on_synthetic(
            ConvNet(width=8),
            train.x[:100],
            train.y[:100],
            EvalRecipe(optimizer="sgd", lr=1e12, epochs=20, batch_size=50, augment=False),
            seed=0,
        )


def test_ipc_beyond_a_class_is_refused(mnist5k_splits):
    train = mnist5k_splits.train
    with pytest.raises(TrainingError, match="fewer than ipc=400"):
        distill("random", RandomParams(), train.x, train.y, ipc=400, init="real", seed=0)


@pytest.mark.parametrize("op", dsa.OPS)
def test_siamese_draw_is_shared_and_differentiable(op):
    g = torch.Generator().manual_seed(0)
    real, syn = torch.randn(6, 1, 28, 28), torch.randn(2, 1, 28, 28, requires_grad=True)
    aug = dsa.sample(op, 1, 28, g)
    together = dsa.apply(torch.cat([real, syn]), aug)
    assert torch.allclose(together, torch.cat([dsa.apply(real, aug), dsa.apply(syn, aug)]))
    dsa.apply(syn, aug).square().sum().backward()
    assert torch.isfinite(syn.grad).all() and syn.grad.abs().sum() > 0


def test_gradient_distance_is_the_per_node_cosine_sum():
    weight, bias = torch.randn(5, 3, 3, 3), torch.randn(5)
    assert gradient_distance([weight, bias], [weight, bias]).abs() < 1e-5
    assert torch.isclose(gradient_distance([-weight, bias], [weight, -bias]), torch.tensor(10.0))


def _paper_loop_loss(net, x_real, x_syn):
    """DM's objective as the paper code computes it: two embeddings per class."""
    loss = x_syn[0].new_zeros(())
    for xr, xs in zip(x_real, x_syn, strict=True):
        with torch.no_grad():
            target = net.embed(xr).mean(0)
        loss = loss + (target - net.embed(xs).mean(0)).pow(2).sum()
    return loss


@pytest.mark.parametrize("real_bf16", [False, True])
def test_dm_batched_objective_is_the_paper_codes_per_class_loop(mnist5k_splits, real_bf16):
    """One batch per side gives the per-class loop's loss and synthetic gradient on the same
    draws (to float rounding; bfloat16 real embeddings within 1%, the gradient's direction kept),
    and the redrawn in-place net is the one `fresh_convnet` draws."""
    from suite.distill.common import RealData, fresh_convnet, initial_images
    from suite.distill.dm import Matcher, draw_batches

    train = mnist5k_splits.train
    params = DMParams(batch_real=24, net_width=16, real_bf16=real_bf16)

    def real_data():
        return RealData(train.x, train.y, torch.device("cpu"), torch.Generator().manual_seed(3))

    ours, theirs = real_data(), real_data()
    syn = initial_images(ours, 2, "real").requires_grad_(True)
    initial_images(theirs, 2, "real")  # the same draw, so both generators stay in step
    matcher = Matcher(params, ours, compiled=False)
    for _ in range(2):
        matcher.redraw(ours)
        net = fresh_convnet(16, 3, theirs).requires_grad_(False)
        for a, b in zip(matcher.net.parameters(), net.parameters(), strict=True):
            assert torch.equal(a, b)
        x_real, x_syn = draw_batches(params, ours, syn, 2)
        draws_theirs = draw_batches(params, theirs, syn, 2)
        for a, b in zip(x_real, draws_theirs[0], strict=True):
            assert torch.equal(a, b)
        loss = matcher.loss(x_real, x_syn)
        (grad,) = torch.autograd.grad(loss, syn, retain_graph=True)
        want = _paper_loop_loss(net, *draws_theirs)
        (want_grad,) = torch.autograd.grad(want, syn)
        tol = 1e-2 if real_bf16 else 1e-5
        assert loss.item() == pytest.approx(want.item(), rel=tol)
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), want_grad.flatten(), dim=0)
        assert cosine > (0.999 if real_bf16 else 1 - 1e-6)


def test_compiled_dm_learns_the_eager_set(mnist5k_splits):
    """With compilation (the run's setting, on at 200 iterations or more) DM learns the same set
    as eagerly, to float rounding: compiling changes the speed, not the result."""
    from suite.distill import dm

    train = mnist5k_splits.train
    params = DMParams(iterations=3, batch_real=16, net_width=8)
    eager = distill("dm", params, train.x, train.y, ipc=1, init="real", seed=5)
    threshold = dm.COMPILE_MIN_ITERATIONS
    try:
        dm.COMPILE_MIN_ITERATIONS = 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled = distill(
                "dm", params, train.x, train.y, ipc=1, init="real", seed=5, compile=True
            )
    finally:
        dm.COMPILE_MIN_ITERATIONS = threshold
    fell_back = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert not fell_back, fell_back  # it compiled: the comparison below is compiled vs eager
    assert torch.allclose(compiled.x_syn, eager.x_syn, atol=1e-4)
    assert compiled.loss_curve == pytest.approx(eager.loss_curve, rel=1e-4)


def test_a_failed_compilation_warns_and_dm_runs_eagerly_with_the_same_result(
    mnist5k_splits, monkeypatch
):
    """Compiling is a speed-up: where the toolchain fails, DM says so once and learns the set it
    learns eagerly."""
    from suite.distill import dm

    def broken(fn, **_):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nmore detail")

        return run

    train = mnist5k_splits.train
    params = DMParams(iterations=3, batch_real=16, net_width=8)
    eager = distill("dm", params, train.x, train.y, ipc=1, init="real", seed=5)
    monkeypatch.setattr(dm, "COMPILE_MIN_ITERATIONS", 1)
    monkeypatch.setattr(dm.torch, "compile", broken)
    with pytest.warns(
        UserWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler\)"
    ):
        fallen = distill("dm", params, train.x, train.y, ipc=1, init="real", seed=5, compile=True)
    assert torch.allclose(fallen.x_syn, eager.x_syn, atol=1e-4)
