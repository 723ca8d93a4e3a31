"""The store contract: a run through the pipeline writes every name of `suite.schema`, and each one
reads back through the schema (a rename on one side only would empty the report silently)."""

import pytest
from tiny_manifests import TINY_CW, tiny_manifest

from suite import schema
from suite.cache import stored_result
from suite.manifest import validate_manifest
from suite.report.collect import collect, select_runs
from suite.runner import run_manifest
from suite.tracking import Store

pytestmark = pytest.mark.usefixtures("one_thread")

FGSM = {"name": "fgsm", "kind": "fgsm", "params": {"eps": [0.1, 0.3]}}
TRANSFER = {**TINY_CW, "name": "cw-from-base", "source": "base"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store holding one seed of an undistilled and a defensively distilled tiny model, both
    attacked (the teacher too) by C&W, FGSM and a C&W transfer from the undistilled model."""
    root = tmp_path_factory.mktemp("schema")
    store = Store(f"sqlite:///{root / 'mlflow.db'}")
    raw = tiny_manifest(
        "schema",
        data={"attack_samples": 6},
        train={"epochs": 1},
        conditions=[
            {"name": "base", "kind": "standard"},
            {"name": "t5", "kind": "defensive", "temperature": 5, "attack_teacher": True},
        ],
        attacks=[TINY_CW, FGSM, TRANSFER],
    )
    rows = run_manifest(validate_manifest(raw, "schema.toml"), store=store)
    assert {r.status for r in rows} == {"FINISHED"}
    return store


def artifacts(store: Store, run_id: str, folder: str | None = None) -> set[str]:
    """Every artifact path of the run, recursively."""
    found = set()
    for item in store.client.list_artifacts(run_id, folder):
        found |= artifacts(store, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_every_name_the_pipeline_writes_reads_back_through_the_schema(store):
    sel = select_runs(store, "schema")
    assert set(sel.parents) == {"base", "t5"} and sel.missing == []
    for parent in sel.parents.values():
        assert parent.tags[schema.LEVEL] == schema.LEVEL_CONDITION
        assert {schema.CONDITION, schema.CONFIG_HASH, schema.KIND} <= set(parent.tags)
        assert store.load_json(parent.run_id, schema.MANIFEST)["experiment"]["name"] == "schema"

    assert set(sel.chosen) == {
        ("base", 0, schema.ROLE_MODEL),
        ("t5", 0, schema.ROLE_TEACHER),
        ("t5", 0, schema.ROLE_STUDENT),
    }
    for (condition, seed, role), run in sel.chosen.items():
        tags = run.tags
        assert (tags[schema.CONDITION], tags[schema.SEED], tags[schema.ROLE]) == (
            condition,
            str(seed),
            role,
        )
        assert tags[schema.PARENT_RUN_ID] == sel.parents[condition].run_id
        for name in (schema.KIND, schema.CONFIG_HASH, schema.MODEL_ID, schema.VERSION):
            assert tags[name], name
        for name in (schema.COMMIT, schema.PID, schema.HOST, schema.RUN_NAME):
            assert name in tags, name
        assert schema.ERROR not in tags
        for name in (schema.FINAL_VAL_ACC, schema.FINAL_TEST_ACC, schema.TRAIN_SECONDS):
            assert name in run.metrics, name
        for metric in schema.CURVE_METRICS:
            assert len(store.metric_history(run.run_id, metric)) == 1, metric

        files = artifacts(store, run.run_id)
        direct = [TINY_CW["name"], FGSM["name"]]
        for attack in [*direct, TRANSFER["name"]]:
            result = schema.attack_result(attack)
            cached = stored_result(store.get(run.run_id), result, tags[schema.result_tag(result)])
            assert 0.0 <= cached["success_rate"] <= 1.0, attack
            assert (
                cached["success_rate"] == run.metrics[schema.result_metric(result, "success_rate")]
            )
            assert schema.attack_records(attack) in files, attack
        for attack in direct:
            for path in (
                schema.attack_images(attack),
                schema.attack_examples(attack),
                schema.attack_picture(attack),
            ):
                assert path in files, path
            cfg = tags[schema.result_tag(schema.attack_result(attack))]
            folder = schema.checkpoint_folder(attack, cfg, 256)
            assert any(f.startswith(folder + "/") for f in files), folder
        fgsm = schema.attack_result("fgsm")
        at_eps = stored_result(store.get(run.run_id), fgsm, tags[schema.result_tag(fgsm)])
        assert schema.metric_key("success_rate@eps=0.3") in at_eps
        masking = stored_result(
            store.get(run.run_id), schema.MASKING, tags[schema.result_tag(schema.MASKING)]
        )
        assert set(schema.MASKING_METRICS) <= set(masking)
        assert schema.GRADIENT_NORMS in files

    teacher, student = sel.chosen[("t5", 0, "teacher")], sel.chosen[("t5", 0, "student")]
    assert student.tags[schema.TEACHER_RUN_ID] == teacher.run_id
    assert teacher.tags[schema.STUDENT_CONFIG_HASH] == student.tags[schema.CONFIG_HASH]


def test_the_report_reads_every_frame_back_and_logs_itself_under_the_report_name(store, tmp_path):
    from suite.report.render import render_report

    data = collect(store, "schema")
    assert set(data.accuracy["condition"]) == {"base", "t5"} and len(data.accuracy) == 3
    assert set(data.curves["metric"]) == set(schema.CURVE_METRICS)
    assert set(data.attacks["attack"]) == {"cw", "fgsm", "cw-from-base"}
    assert set(data.attacks["condition"]) == {"base", "t5", "t5/teacher"}
    assert len(data.masking) == 3 and data.masking["flagged"].dtype == bool
    assert {"base/cw", "t5/teacher/fgsm"} <= set(data.examples)
    assert data.setup["data_source"] != "unknown" and data.setup["git_commit"]
    assert 0 < data.run_seconds < 600  # three runs, each trained and attacked in seconds

    output = render_report(data, tmp_path / "report", ("md",))
    exp_id = store.experiment_id("schema", create=False)
    run_id = store.log_report(exp_id, output.out_dir, output.written)
    (report,) = [r for r in store.runs(exp_id) if r.tags.get(schema.LEVEL) == schema.LEVEL_REPORT]
    assert report.run_id == run_id
    assert f"{schema.REPORT_FOLDER}/report.md" in artifacts(store, run_id)
