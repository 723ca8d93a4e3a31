"""Certified bounds: the networks' affine/ReLU form computes their logits and its transposes are
adjoints; every bound holds on every sampled point of its ball; a linear classifier gets its exact
radius; and no attack of the suite finds an adversarial inside a certified radius."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from suite.attacks import ATTACK_PARAMS
from suite.attacks.run import run_attack
from suite.models import build_model
from suite.verify.bounds import certified_radius, crown_bounds, interval_bounds
from suite.verify.exact import minimal_distortion
from suite.verify.network import Affine, linear_form, piecewise_linear
from suite.verify.network import forward as form_forward

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ["mlp", "mlp-small", "tiny", "cw-mnist", "convnet"])
def test_the_linear_form_computes_the_logits_and_its_transposes_are_adjoints(arch):
    torch.manual_seed(0)
    model = build_model(arch, dropout=0.5).eval()
    ops = linear_form(model)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(form_forward(ops, x), model(x), atol=1e-5)
    for op in ops:  # <A, f(x) − f(0)> = <Aᵀ, x> and |W|·r ≥ |f(x + r) − f(x)| for r ≥ 0
        if not isinstance(op, Affine):
            continue
        x = torch.randn(2, *op.in_shape, dtype=torch.float64)
        a = torch.randn(2, 4, *op.out_shape, dtype=torch.float64)
        f = _double(op)
        lhs = (a * (f(x) - op.bias.double()).unsqueeze(1)).flatten(2).sum(2)
        rhs = (op.transpose(a.float()).double() * x.unsqueeze(1)).flatten(2).sum(2)
        assert torch.allclose(lhs, rhs, rtol=1e-4, atol=1e-3), type(op)
        r = torch.rand(2, *op.in_shape)
        step = (op.forward(x.float() + r) - op.forward(x.float())).abs()
        assert (step <= op.abs_forward(r) + 1e-4).all()


def _double(op: Affine):
    return lambda x: op.forward(x.float()).double()


def test_the_distillation_convnet_has_a_linear_form_with_instance_norm():
    torch.manual_seed(0)
    model = build_model("convnet", dropout=0.0).eval()
    with torch.no_grad():  # trained affine parameters, not GroupNorm's initial γ = 1, β = 0
        for layer in model.modules():
            if isinstance(layer, nn.GroupNorm):
                layer.weight.normal_(1, 0.3)
                layer.bias.normal_(0, 0.3)
    ops = linear_form(model)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(form_forward(ops, x), model(x), atol=1e-4)
    assert not piecewise_linear(ops)
    with pytest.raises(ValueError, match="not piecewise linear"):
        minimal_distortion(ops, x[:1], 0, 0.1)


def _toy(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).double()


@pytest.mark.parametrize("crown_units", [0, 10**6])
def test_every_bound_holds_on_every_sampled_point_of_its_ball(crown_units):
    """A 201 × 201 grid over each ball (∩ the pixel box) of 2-D toy networks: IBP's output box
    holds every logit and CROWN's lower bound every margin, with intermediate bounds from IBP
    (crown_units 0) or from CROWN."""
    grid = torch.linspace(-1, 1, 201, dtype=torch.float64)
    square = torch.cartesian_prod(grid, grid)
    for seed in range(6):
        net = _toy(seed)
        ops = linear_form(net, (2,))
        x = torch.rand(4, 2, dtype=torch.float64)
        eps = 0.05 + 0.3 * torch.rand(4, dtype=torch.float64)
        spec = torch.randn(4, 5, 3, dtype=torch.float64)
        box_lo, box_hi = interval_bounds(ops, (x - eps[:, None]).clamp(0, 1),
                                         (x + eps[:, None]).clamp(0, 1))[-1]  # fmt: skip
        for norm in ("linf", "l2", "l1"):
            bound = crown_bounds(ops, x, eps, spec, norm, crown_units=crown_units)
            for b in range(len(x)):
                ball = {
                    "linf": square, "l2": square[square.norm(dim=1) <= 1],
                    "l1": square[square.abs().sum(1) <= 1],
                }[norm]  # fmt: skip
                points = (
                    (x[b] + eps[b] * ball).clamp(0, 1) if norm == "linf" else x[b] + eps[b] * ball
                )
                points = points[((points >= 0) & (points <= 1)).all(1)]
                with torch.no_grad():
                    out = net(points)
                assert (bound[b] <= (out @ spec[b].T).min(0).values + 1e-9).all()
                if norm == "linf":
                    assert (out >= box_lo[b] - 1e-9).all() and (out <= box_hi[b] + 1e-9).all()


def _normed_toy(seed: int) -> nn.Sequential:
    """A 3 × 3-pixel conv net with instance norm (trained-looking γ, β) and average pooling: the
    distillation ConvNet's layers, small enough to sample its balls densely."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 2, padding=1), nn.GroupNorm(4, 4), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16, 3),
    ).double()  # fmt: skip
    with torch.no_grad():
        net[1].weight.normal_(1, 0.5)
        net[1].bias.normal_(0, 0.5)
    return net


def _normed_violations(eps_scale: float = 1.0) -> int:
    """Sampled points of L∞, L2 and L1 balls (corners, surfaces, insides) of `_normed_toy` nets
    where a margin falls below CROWN's bound or a logit leaves IBP's box."""
    bad = 0
    gen = torch.Generator().manual_seed(0)
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * 9)
    for seed in range(4):
        net = _normed_toy(seed)
        ops = linear_form(net, (1, 3, 3))
        x = torch.rand(3, 1, 3, 3, dtype=torch.float64, generator=gen)
        eps = eps_scale * (0.02 + 0.2 * torch.rand(3, dtype=torch.float64, generator=gen))
        spec = torch.randn(3, 5, 3, dtype=torch.float64, generator=gen)
        box_lo, box_hi = interval_bounds(ops, (x - eps.view(-1, 1, 1, 1)).clamp(0, 1),
                                         (x + eps.view(-1, 1, 1, 1)).clamp(0, 1))[-1]  # fmt: skip
        for norm in ("linf", "l2", "l1"):
            bound = crown_bounds(ops, x, eps, spec, norm)
            for b in range(len(x)):
                d = torch.randn(4000, 9, dtype=torch.float64, generator=gen)
                if norm == "linf":
                    d = torch.cat([corners, d.clamp(-1, 1), torch.sign(d)])
                else:
                    size = d.norm(dim=1, keepdim=True) if norm == "l2" else d.abs().sum(1, True)
                    d = d / size
                    d = torch.cat(
                        [d, d * torch.rand(len(d), 1, dtype=torch.float64, generator=gen)]
                    )
                points = (x[b].flatten() + eps[b] * d).view(-1, 1, 3, 3)
                inside = ((points >= 0) & (points <= 1)).flatten(1).all(1)
                points = points.clamp(0, 1) if norm == "linf" else points[inside]
                with torch.no_grad():
                    out = net(points)
                bad += int((bound[b] > (out @ spec[b].T).min(0).values + 1e-9).sum())
                if norm == "linf":
                    bad += int(((out < box_lo[b] - 1e-9) | (out > box_hi[b] + 1e-9)).sum())
    return bad


def test_instance_norm_bounds_hold_on_every_sampled_point_of_their_balls(monkeypatch):
    """The relaxation of instance norm is sound on dense samples of each ball; dropping its
    width (treating the scale as fixed at its interval's midpoint) is not, and the check says so."""
    import suite.verify.bounds as bounds

    assert _normed_violations() == 0
    real = bounds._norm_relax
    monkeypatch.setattr(
        bounds, "_norm_relax", lambda op, lo, hi: (real(op, lo, hi)[0], torch.zeros_like(lo))
    )
    assert _normed_violations(eps_scale=2.0) > 0


def test_a_linear_classifier_gets_its_exact_radius():
    """No ReLU: CROWN is exact, so the certified radius is min_j m_j / ‖w_y − w_j‖ (dual norm:
    L1 for L∞, L2 for L2, L∞ for L1), where the ball stays inside the box."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3)).double()
    ops = linear_form(net, (2,))
    x = 0.4 + 0.2 * torch.rand(64, 2, dtype=torch.float64)
    with torch.no_grad():
        labels = net(x).argmax(1)
    w, b = net[0].weight.detach(), net[0].bias.detach()
    for norm, dual in (("linf", 1), ("l2", 2), ("l1", torch.inf)):
        diffs = w[labels][:, None, :] - w[None, :, :]  # [B, classes, 2]
        m = (diffs * x[:, None, :]).sum(2) + b[labels][:, None] - b[None, :]
        size = diffs.norm(p=dual, dim=2)
        exact = torch.where(size > 0, m / size, torch.inf).min(1).values
        inside = exact < 0.35  # the ball stays inside [0, 1]²
        radius = certified_radius(ops, x, labels, norm, steps=40, upper=1.0)
        assert inside.sum() > 10
        assert torch.allclose(radius[inside], exact[inside], atol=1e-9)


def test_no_attack_finds_an_adversarial_inside_a_certified_radius(trained_tiny, mnist5k_splits):
    """On the tests' trained conv net and 12 test digits: FMN (L∞) and DDN (L2) at 200 steps
    never beat the certified radius, searched up to twice what they found; CROWN's radii are
    more than twice IBP's."""
    x, y = mnist5k_splits.test.x[:12], mnist5k_splits.test.y[:12]
    ops = linear_form(trained_tiny)
    for kind, norm in (("fmn-linf", "linf"), ("ddn", "l2")):
        found = run_attack(kind, ATTACK_PARAMS[kind](steps=200), trained_tiny, x, y,
                           np.arange(len(x)), seed=0).records  # fmt: skip
        ok = torch.as_tensor(
            found["success"].to_numpy(bool) & found["clean_correct"].to_numpy(bool)
        )
        distortion = torch.tensor(found[norm].to_numpy(float), dtype=torch.float32)
        # the search may go to twice what the attack found: a radius past it would be unsound
        top = torch.where(
            ok, 2 * distortion, torch.full_like(distortion, 1.0 if norm == "linf" else 8.0)
        )
        crown = certified_radius(ops, x, y, norm, steps=10, upper=top)
        ibp = certified_radius(ops, x, y, norm, method="ibp", steps=10, upper=top)
        assert (crown[ok] <= distortion[ok]).all() and (ibp[ok] <= distortion[ok]).all()
        assert crown[ok].median() > 2 * ibp[ok].median() > 0


def _varied_toy(seed: int) -> nn.Sequential:
    """A 2-D toy net whose decision regions are small enough for the unit square to hold several."""
    net = _toy(seed).float()
    with torch.no_grad():
        for layer in net[::2]:
            layer.weight.normal_(0, 3)
            layer.bias.normal_(0, 3)
    return net


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_the_exact_minimal_distortion_matches_a_grid_search(norm):
    """On 2-D toy nets, against the nearest misclassified point of an 801 × 801 grid over the
    unit square (L∞ or L1 distance): the program's value lies within one grid step below it, its
    bracket holds it, and the certified radius lies below it."""
    grid = torch.cartesian_prod(*[torch.linspace(0, 1, 801, dtype=torch.float64)] * 2)
    step = 1 / 800
    eps_max = 0.6 if norm == "linf" else 1.2
    compared = 0
    for seed in range(1, 5):
        net = _varied_toy(seed)
        ops = linear_form(net, (2,))
        with torch.no_grad():
            regions = net(grid.float()).argmax(1)
        for x in torch.rand(3, 1, 2, generator=torch.Generator().manual_seed(seed)):
            with torch.no_grad():
                label = int(net(x).argmax(1))
            wrong = regions != label
            delta = (grid - x.double()).abs()
            dist = delta.amax(1) if norm == "linf" else delta.sum(1)
            nearest = dist[wrong].min().item() if wrong.any() else None
            exact = minimal_distortion(ops, x, label, eps_max, norm=norm, tolerance=1e-5)
            radius = certified_radius(ops, x, torch.tensor([label]), norm, steps=24).item()
            if nearest is None or nearest > eps_max:
                assert exact.status == "none within eps_max" and exact.lower == eps_max
                continue
            compared += 1
            assert exact.solved and exact.lower <= exact.value <= exact.upper
            assert nearest - step - 1e-4 <= exact.value <= nearest + 1e-4
            assert radius <= exact.value + 1e-6
    assert compared >= 6


def test_an_exhausted_time_limit_leaves_a_bracket_not_a_value():
    net = _varied_toy(1)
    ops = linear_form(net, (2,))
    x = torch.tensor([[0.3, 0.6]])
    with torch.no_grad():
        label = int(net(x).argmax(1))
    cut = minimal_distortion(ops, x, label, eps_max=0.6, floor=0.01, time_limit=1e-9)
    assert not cut.solved and cut.status == "time limit" and np.isnan(cut.value)
    assert cut.lower == 0.01 and cut.upper == np.inf


VERIFY = [
    {"name": "cert-linf", "kind": "certified", "norm": "linf"},
    {"name": "cert-l2", "kind": "certified", "norm": "l2", "params": {"method": "crown"}},
    {
        "name": "exact",
        "kind": "exact",
        "samples": 2,
        "params": {"time_limit": 4, "tolerance": 1e-3},
    },
    {"name": "cert-l1", "kind": "certified", "norm": "l1"},
    {
        "name": "exact-l1",
        "kind": "exact",
        "norm": "l1",
        "samples": 1,
        "params": {"eps_max": 20, "time_limit": 2},
    },
]
NAMES = {v["name"] for v in VERIFY}
FMN_LINF = {"name": "fmn-linf", "kind": "fmn-linf", "params": {"steps": 40}}


@pytest.fixture(scope="module")
def verified_store(tmp_path_factory):
    """One seed of an undistilled MLP attacked by C&W L2 and FMN-L∞ and verified by certified L∞
    and L2 radii and the exact L∞ solver on its first digits, run through the whole pipeline."""
    from tiny_manifests import TINY_CW, tiny_manifest

    from suite.manifest import validate_manifest
    from suite.runner import run_manifest
    from suite.tracking import Store

    root = tmp_path_factory.mktemp("verified")
    store = Store(f"sqlite:///{root / 'mlflow.db'}")
    raw = tiny_manifest("verified", attacks=[TINY_CW, FMN_LINF])
    raw["model"]["arch"] = "mlp"
    raw["verify"] = VERIFY
    rows = run_manifest(validate_manifest(raw, "verified.toml"), store=store)
    assert {r.status for r in rows} == {"FINISHED"}
    assert set(rows[0].verified) == NAMES
    return store


def test_verifications_pair_with_the_attacks_and_no_attack_beats_a_certified_radius(
    verified_store, tmp_path
):
    from suite.report.brackets import brackets, violations
    from suite.report.collect import collect
    from suite.report.render import render_report

    data = collect(verified_store, "verified")
    v = data.verified
    assert set(v["verification"]) == NAMES
    attacked = set(data.attacks["sample_index"])
    assert set(v["sample_index"]) <= attacked  # the attacks' digits, paired by sample_index
    assert len(v[v["verification"] == "exact"]) == 2
    clean = v[v["status"] != "misclassified"]
    assert (clean["lower"] > 0).all() and (clean["lower"] <= clean["upper"]).all()
    assert violations(v, data.attacks).empty  # real records of real attacks: sound
    exact = clean[clean["verification"] == "exact"]
    fmn = data.attacks[(data.attacks["attack"] == "fmn-linf") & data.attacks["success"]]
    best = fmn.groupby("sample_index")["linf"].min()
    cert = clean[clean["verification"] == "cert-linf"].set_index("sample_index")["lower"]
    assert len(exact) == 2
    for r in exact.itertuples():  # the bracket: from the certificate up to the attack's best
        assert cert[r.sample_index] - 1e-9 <= r.lower <= r.upper <= best[r.sample_index] + 1e-6
        assert not r.solved or r.lower <= r.value <= r.upper
        assert r.solved or r.status == "time limit"
    table = brackets(v, data.attacks, ["base"])
    assert set(table["verification"]) == NAMES
    assert (table["violations"] == 0).all()
    attacked_norm = table["norm"] != "l1"  # no attack records an L1 distortion
    assert (table.loc[attacked_norm, "median_ratio"] >= 1 - 1e-6).all()  # never below the proof
    assert table.loc[~attacked_norm, "median_ratio"].isna().all()
    l1 = clean[clean["verification"] == "exact-l1"].iloc[0]
    l1_cert = clean[clean["verification"] == "cert-l1"].set_index("sample_index")["lower"]
    assert l1_cert[l1.sample_index] - 1e-9 <= l1.lower <= l1.upper  # from the certificate up
    assert l1.upper <= 20 or l1.status == "time limit"  # to its witness, or none found in time
    out = render_report(data, tmp_path / "report", formats=("md",))
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Bounds on the true minimal distortion" in text and "Soundness check: no attack" in text
    records = pd.read_csv(tmp_path / "report" / "tables" / "per_digit_verified.csv.gz")
    assert set(records["verification"]) == NAMES  # published
    assert {"sample_index", "lower", "value", "upper", "solved", "seconds"} <= set(records)
    for norm in ("linf", "l2", "l1"):  # the brackets' figure per norm, drawn
        assert f"(figures/brackets_{norm}.png)" in text
        assert (tmp_path / "report" / "figures" / f"brackets_{norm}.png").stat().st_size > 5000
    assert out is not None
    # a twin of the model as a second condition, its digits marked solved at the bracket's top
    # (the tiny time limit leaves them open): the exact values get their own comparison
    twin = {f: pd.concat([getattr(data, f), getattr(data, f).assign(condition="twin")])
            for f in ("verified", "attacks", "accuracy")}  # fmt: skip
    is_exact = twin["verified"]["verification"] == "exact"
    twin["verified"].loc[is_exact, "solved"] = True
    twin["verified"].loc[is_exact, "value"] = twin["verified"].loc[is_exact, "upper"]
    is_twin = is_exact & (twin["verified"]["condition"] == "twin")
    twin["verified"].loc[is_twin, "value"] *= 1.5  # half again the base's exact minimum
    render_report(
        dataclasses.replace(data, **twin, baselines={"twin": "base"}), tmp_path / "twin",
        formats=("md",),
    )  # fmt: skip
    text = (tmp_path / "twin" / "report.md").read_text()
    assert ". The comparison on exact minimal distortions" in text
    answer = text.split("## Answer", 1)[1].split("\n## ", 1)[0]  # the proofs are in the answer
    assert (
        "on the exact minimal L∞ distortions, the ratio to the baseline is `twin` against "
        "`base` 1.50" in answer
    )
    assert "No attack reported an adversarial inside a certified radius." in answer
    exact = pd.read_csv(tmp_path / "twin" / "tables" / "comparisons_exact.csv")
    pooled = exact[(exact["scope"] == "pooled") & (exact["subset"] == "all digits")]
    assert pooled["n_pairs"].tolist() == [2] and pooled["ratio"].tolist() == [1.5]


def test_a_planted_violation_is_reported_as_a_bug():
    from suite.report.brackets import violations

    keys = {"condition": ["m"], "seed": [0], "sample_index": [7]}
    verified = pd.DataFrame({**keys, "verification": ["c"], "norm": ["l2"], "lower": [0.5]})
    attacks = pd.DataFrame({**keys, "attack": ["a"], "success": [True], "l2": [0.4], "linf": [0.1]})
    found = violations(verified, attacks)
    assert found[["attack", "distortion", "lower"]].values.tolist() == [["a", 0.4, 0.5]]
    attacks["l2"] = 0.5  # at the radius itself: not a violation
    assert violations(verified, attacks).empty


def _validation_error(tmp_path, raw: dict) -> tuple:
    """`suite validate` on manifest `raw` written under `tmp_path`: exit code 2 and one line of
    output, returned with the manifest's path."""
    from tiny_manifests import to_toml
    from typer.testing import CliRunner

    from suite.cli import app

    path = tmp_path / "m.toml"
    path.write_text(to_toml(raw))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    return path, line


def test_an_exact_verification_of_the_instance_normed_convnet_is_one_line_error(tmp_path):
    from tiny_manifests import tiny_manifest

    raw = tiny_manifest("bad")
    raw["conditions"].append({"name": "cn", "kind": "standard", "arch": "convnet"})
    raw["verify"] = [
        {"name": "cert", "kind": "certified"},  # bound propagation relaxes its instance norm
        {"name": "exact", "kind": "exact"},
    ]
    path, line = _validation_error(tmp_path, raw)
    assert line.startswith(
        f"{path}: verify[1]: conditions[1] (cn) is a convnet, which exact cannot verify"
    )
    assert "not piecewise linear" in line


def test_exact_values_are_compared_with_the_attacks_paired_statistics():
    """Issue 30 item 4: exact minimal distortions enter the same paired comparison as an attack's;
    a digit proved clean up to eps_max counts as ∞, a misclassified one as 0, and one the solver
    left open is left out of both models' pairs."""
    from suite.report import tables
    from suite.report.brackets import exact_records

    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1, 2):
        for digit in range(12):
            base = float(rng.uniform(0.05, 0.15))
            for condition, value in (("base", base), ("t100", 1.5 * base)):
                status, solved, upper = "optimal", True, value
                if digit == 10 and condition == "t100":
                    status, solved, value, upper = "time limit", False, np.nan, 0.4
                if digit == 11 and condition == "t100":
                    status, solved, value, upper = "none within eps_max", False, np.nan, np.inf
                rows.append({"condition": condition, "seed": seed, "verification": "exact",
                             "kind": "exact", "norm": "linf", "sample_index": digit, "label": 1,
                             "lower": 0.0, "value": value, "upper": upper, "solved": solved,
                             "status": status, "seconds": 1.0})  # fmt: skip
    rows.append({**rows[0], "condition": "base", "verification": "cert", "kind": "certified"})
    records = exact_records(pd.DataFrame(rows))
    assert set(records["attack"]) == {"exact"}  # certified radii are bounds, not values
    assert len(records) == 3 * 24 - 3  # the three open digits of t100 are left out
    inf_row = records[(records["condition"] == "t100") & (records["sample_index"] == 11)]
    assert not inf_row["success"].any() and inf_row["clean_correct"].all()
    compared = tables.comparisons(records, {"t100": "base"}, {}, 0.05, 0)
    pooled = compared[(compared["scope"] == "pooled") & (compared["subset"] == "all digits")]
    (row,) = pooled.itertuples()
    assert row.attack == "exact" and row.verdict == "secondary"
    assert row.ratio == pytest.approx(1.5, rel=1e-6)
    assert row.n_pairs == 11  # digits 0-9 and the ∞ one; digit 10 is open under t100
    assert row.n_other_infinite == 1


def test_a_verification_covers_its_conditions_only_and_a_defensive_condition_trains_its_arch(
    tmp_path,
):
    """`verify.conditions` limits a verification to the models of those conditions, and a defensive
    condition's `arch` builds its teacher and student as that network (not `model.arch`)."""
    from tiny_manifests import tiny_manifest

    from suite.manifest import validate_manifest
    from suite.models import SmallMLP, Tiny
    from suite.runner import run_manifest
    from suite.tracking import Store

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    raw = tiny_manifest(
        "filtered",
        attacks=[FMN_LINF],
        conditions=[
            {"name": "base", "kind": "standard", "arch": "mlp-small"},
            {"name": "t20", "kind": "defensive", "temperature": 20, "arch": "mlp-small"},
            {"name": "cnn", "kind": "standard"},
        ],
    )
    raw["data"]["attack_samples"] = 4
    raw["verify"] = [
        {"name": "cert", "kind": "certified"},
        {"name": "exact", "kind": "exact", "conditions": ["t20"], "params": {"time_limit": 4}},
    ]
    rows = {
        (r.condition, r.role): r
        for r in run_manifest(validate_manifest(raw, "f.toml"), store=store)
    }
    assert {r.status for r in rows.values()} == {"FINISHED"}
    assert set(rows["t20", "student"].verified) == {"cert", "exact"}
    assert set(rows["base", "model"].verified) == set(rows["cnn", "model"].verified) == {"cert"}
    assert isinstance(store.load_model(rows["t20", "student"].run_id), SmallMLP)
    assert isinstance(store.load_model(rows["cnn", "model"].run_id), Tiny)
    teacher_of = store.get(rows["t20", "student"].run_id).tags["teacher_run_id"]
    assert isinstance(store.load_model(teacher_of), SmallMLP)


def test_a_verification_naming_an_unknown_condition_is_one_line_error(tmp_path):
    from tiny_manifests import tiny_manifest

    raw = tiny_manifest("bad")
    raw["verify"] = [{"name": "exact", "kind": "exact", "conditions": ["base", "nope"]}]
    path, line = _validation_error(tmp_path, raw)
    assert line.startswith(f"{path}: verify[0].conditions: names no condition of this manifest")
    assert "'nope'" in line or "nope" in line


@pytest.mark.parametrize(
    ("verify", "field", "says"),
    [
        ({"norm": "l2"}, "norm", "L∞ or L1"),
        ({"norm": "l1"}, "params.eps_max", "needs the largest L1 distortion"),
        ({"norm": "linf", "params": {"eps_max": 2}}, "params.eps_max", "leaves the pixel box"),
    ],
)
def test_an_exact_verification_outside_its_norms_is_one_line_error(tmp_path, verify, field, says):
    from tiny_manifests import tiny_manifest

    raw = tiny_manifest("bad")
    raw["verify"] = [{"name": "exact", "kind": "exact", **verify}]
    path, line = _validation_error(tmp_path, raw)
    assert line.startswith(f"{path}: verify[0].{field}:") and says in line


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_an_unsound_big_m_is_caught_by_the_grid_search(monkeypatch, norm):
    """A deliberately wrong encoding, ReLU bounds from a ball a tenth the size, makes the program
    miss adversarials the grid finds: the grid-search test would fail on it."""
    import suite.verify.exact as exact

    real = exact.pre_activation_bounds
    monkeypatch.setattr(
        exact, "pre_activation_bounds", lambda ops, x, eps, norm: real(ops, x, eps / 10, norm)
    )
    with pytest.raises(AssertionError):
        test_the_exact_minimal_distortion_matches_a_grid_search(norm)


def test_an_exact_comparison_of_tied_or_too_few_digits_is_not_stated_as_a_ratio():
    """Digits both models misclassify pair as ties (0 against 0): where fewer than two pairs are
    untied the answer names the comparison as not made instead of a ratio of 1.00, and a
    comparison the statistics flag carries their reason."""
    from suite.report.render import _bounds_sentence

    row = {"scope": "pooled", "subset": "all digits", "baseline": "base", "ratio": 1.0,
           "ratio_lo": 1.0, "ratio_hi": 1.0}  # fmt: skip
    exact = pd.DataFrame([
        {**row, "condition": "a", "norm": "l1", "n_pairs": 2, "n_ties": 2, "why": None},
        {**row, "condition": "b", "norm": "l1", "n_pairs": 1, "n_ties": 0,
         "why": "fewer than two seeds"},
        {**row, "condition": "d", "norm": "linf", "n_pairs": 9, "n_ties": 0,
         "why": "fewer than two seeds"},
        {**row, "condition": "c", "norm": "linf", "n_pairs": 40, "n_ties": 1, "why": None,
         "ratio": 1.3, "ratio_lo": 1.1, "ratio_hi": 1.5},
    ])  # fmt: skip
    bounded = pd.DataFrame({"median_gap": [np.nan], "condition": ["c"]})
    text = _bounds_sentence(exact, bounded, pd.DataFrame())
    assert "on the exact minimal L∞ distortions, the ratio to the baseline is `d` against" in text
    assert "`c` against `base` 1.30 [1.10, 1.50] over 40 digit pairs." in text
    assert "L1 distortions" not in text
    assert "`a` at L1 (0 of 2 digit pairs untied)" in text
    assert "`b` at L1 (1 of 1 digit pairs untied)" in text
    assert "over 9 digit pairs (fewer than two seeds)" in text
