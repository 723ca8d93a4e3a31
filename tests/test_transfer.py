"""Transfer attacks: adversarials crafted on one model, evaluated on the others, from the store."""

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_manifests import tiny_manifest, to_toml

from suite.attacks import ATTACK_PARAMS, run_attack
from suite.attacks.transfer import scale_perturbations, transfer_records
from suite.errors import ManifestError
from suite.identity import config_hash
from suite.manifest import load_manifest
from suite.report.collect import collect
from suite.report.render import render_report
from suite.runner import run_manifest
from suite.tracking import Store

pytestmark = pytest.mark.usefixtures("one_thread")
SAME = ["sample_index", "label", "clean_pred", "adv_pred", "clean_correct", "success", "l0", "l2"]

CW = {"binary_steps": 3, "max_iterations": 30, "initial_const": 1.0, "lr": 0.05}
MANIFEST = to_toml(
    tiny_manifest(
        "transfer-e2e",
        data={"attack_samples": 10},
        conditions=[
            {"name": "other", "kind": "standard", "epochs": 1},
            {"name": "base", "kind": "standard"},
        ],
        attacks=[
            {"name": "cw", "kind": "cw-l2", "params": CW},
            {"name": "cw-from-base", "kind": "cw-l2", "source": "base", "params": CW},
            {
                "name": "pgd",
                "kind": "pgd-linf",
                "params": {"eps": [0.1, 0.3], "steps": 5, "step_size": 0.1},
            },
            {
                "name": "square",
                "kind": "autoattack",
                "params": {
                    "version": "custom",
                    "attacks": ["square"],
                    "norm": "linf",
                    "eps": [0.3],
                    "square_queries": 50,
                },
            },
        ],
    )
)


def test_source_names_a_condition_and_an_unset_one_keeps_earlier_hashes(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MANIFEST.replace('source = "base"', 'source = "nope"'))
    with pytest.raises(ManifestError, match=r"attacks\[1\]\.source.*no such condition"):
        load_manifest(path)
    path.write_text(MANIFEST)
    direct = load_manifest(path).attacks[0]
    before = direct.model_dump(mode="json")
    before.pop("source")  # the attack as hashed before transfer attacks existed
    before.pop("ensemble")  # and before the best-of could leave an attack out (report-only)
    before.pop("protocol")  # and before an attack could name another paper's protocol (report-only)
    later = ("abort_failing", "lr_schedule", "lr_final", "lr_warmup")
    for name in later:  # and before C&W's budget saver and learning-rate schedule
        before["params"].pop(name)
    before["params"]["abort_early"] = False  # and with the early abort, since removed
    assert config_hash(direct) == config_hash(before)


def test_transfer_from_a_model_to_itself_equals_the_direct_attack(trained_tiny, mnist5k_splits):
    idx = np.arange(16)
    x, y = mnist5k_splits.test.x[idx], mnist5k_splits.test.y[idx]
    params = ATTACK_PARAMS["cw-l2"](binary_steps=2, max_iterations=40, initial_const=1.0, lr=0.05)
    direct = run_attack("cw-l2", params, trained_tiny, x, y, idx, seed=0)
    moved = transfer_records(trained_tiny, x, direct.x_adv, direct.records)
    assert direct.records["success"].any()
    pd.testing.assert_frame_equal(moved[SAME], direct.records[SAME])
    assert (moved["source_success"] == direct.records["success"]).all()
    assert (moved["grad_evals"] == 0).all()


def test_rescaled_perturbations_have_the_asked_norm_and_clean_rows_stay_clean(mnist5k_splits):
    x = mnist5k_splits.test.x[:6]
    delta = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x_adv = (x + delta).clamp(0, 1)
    x_adv[0] = x[0]  # a row the source did not change
    scaled = scale_perturbations(x, x_adv, "l2", 0.5)
    assert torch.equal(scaled[0], x[0])
    norms = (scaled - x).flatten(1).norm(dim=1)[1:]
    assert (norms <= 0.5 + 1e-5).all() and (norms > 0.3).all()  # clipping only shortens
    linf = scale_perturbations(x, x_adv, "linf", 0.1)
    assert torch.allclose((linf - x).flatten(1).abs().amax(1)[1:], torch.tensor(0.1), atol=1e-6)
    with pytest.raises(ValueError, match="cannot rescale"):
        scale_perturbations(x, x_adv, "l0", 3)


def test_transfer_rows_pair_by_sample_index_and_need_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "m.toml").write_text(MANIFEST)
    spec = load_manifest(tmp_path / "m.toml")
    store = Store()

    alone = run_manifest(spec, store=store, only=["other"])  # the source has not run yet
    assert alone[0].status == "FAILED" and "run that condition first" in alone[0].error

    rows = {r.condition: r for r in run_manifest(spec, store=store)}
    assert all(r.status == "FINISHED" for r in rows.values())
    assert "scaled_success_rate" in rows["other"].attacks["cw-from-base"]

    def table(condition: str, attack: str) -> pd.DataFrame:
        return store.load_table(rows[condition].run_id, f"attacks/{attack}.parquet")

    crafted, moved = table("base", "cw-from-base"), table("other", "cw-from-base")
    assert (crafted["source"] == "base").all() and (moved["source"] == "base").all()
    assert moved["sample_index"].tolist() == crafted["sample_index"].tolist()
    assert (moved["label"] == crafted["label"]).all()
    assert (moved["source_success"] == crafted["success"]).all()
    own = table("other", "cw")  # the target's direct attack, on the same digits
    assert moved["sample_index"].tolist() == own["sample_index"].tolist()
    assert (moved["clean_pred"] == own["clean_pred"]).all()
    images = store.load_arrays(rows["base"].run_id, "attacks/cw-from-base.adv.npz")
    assert images["x_adv"].dtype == np.float32
    assert images["sample_index"].tolist() == crafted["sample_index"].tolist()

    report = render_report(collect(store, "transfer-e2e"), tmp_path / "report", formats=("md",))
    text = report.markdown.read_text(encoding="utf-8")
    assert ". Transfer attacks\n" in text and ". Attack: cw-from-base" not in text
    lines = text.splitlines()
    head = lines.index("| evaluated on | cw-from-base (from base) |")
    cells = dict(
        [c.strip() for c in line.strip("|").split("|")] for line in lines[head + 2 : head + 4]
    )
    own_rate = crafted["success"][crafted["clean_correct"]].mean()
    assert cells["base"] == f"{100 * own_rate:.1f}%"  # the source's own row: the direct attack
    moved_rate = moved["success"][moved["clean_correct"]].mean()
    assert cells["other"].startswith(f"{100 * moved_rate:.1f}% (")

    # the three masking checks, from the store: Square is known as gradient-free by its settings
    assert ". Gradient masking: three checks\n" in text
    checks = pd.read_csv(report.out_dir / "tables" / "masking_checks.csv").set_index("condition")
    assert set(checks.index) == {"base", "other"} and (checks["softmax_attack"] == "pgd").all()
    assert checks["gradient_free_attack"].eq("square").all()
    assert checks["gradient_free_eps"].eq(0.3).all()
    assert pd.isna(checks.loc["base", "transfer_p"])  # the source: its rows are the direct attack
    assert checks.loc["other", "transfer_attack"] == "cw-from-base"
    assert checks.loc["other", "transfer_eps"] == 0.3  # the PGD's largest ε
    square = table("other", "square")
    pgd = table("other", "pgd")
    hit = square["success"] & square["clean_correct"]
    assert checks.loc["other", "gradient_free_success"] == pytest.approx(
        hit[pgd["clean_correct"]].mean()
    )
