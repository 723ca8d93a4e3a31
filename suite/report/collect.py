"""Read an experiment back from the MLflow store into the tidy frames of `ReportData`.

Two steps: `select_runs` picks the runs (for each condition the newest parent run, i.e. the current
manifest's settings; under it the newest run per (seed, role); runs that did not finish are listed
in `missing`, never dropped silently), then `collect` builds the frames from them.
"""

from collections.abc import Container
from dataclasses import dataclass

import numpy as np
import pandas as pd

from suite import schema
from suite.attacks import FIXED_BUDGET_KINDS, budget_eps, is_gradient_free
from suite.distill import HERDING_METHOD
from suite.errors import StoreError
from suite.manifest import (
    ManifestFieldError,
    SyntheticEval,
    accuracy_matched_controls,
    baselines,
    same_size_controls,
)
from suite.report.frames import ReportData, model_label
from suite.schema import Status
from suite.tracking import Store, StoredRun
from suite.verify.kinds import RECORD_COLUMNS as VERIFY_RECORD_COLUMNS

ATTACK_COLUMNS = [
    "condition", "kind", "seed", "attack", "attack_kind", "sample_index", "label", "target",
    "clean_pred", "adv_pred", "clean_correct", "success", "l0", "l2", "linf", "const",
    "grad_evals", "eps",
]  # fmt: skip
ACCURACY_COLUMNS = ["condition", "kind", "role", "seed", "val_acc", "test_acc", "status", "error"]
CURVE_COLUMNS = ["condition", "role", "seed", "epoch", "metric", "value"]
DEFAULT_ACCURACY_FLOOR: float = SyntheticEval.model_fields["min_test_acc"].default

RunKey = tuple[str, int, str]  # (condition, seed, role)

Span = tuple[int, int]  # (start, end) in ms since the epoch
LEGACY_GAP_MS = 3_600_000  # no metric for an hour: a run of an older version was idle, not open


@dataclass(frozen=True)
class Selection:
    """The runs of an experiment a report reads, and the manifest they were run from."""

    manifest: dict
    order: list[str]  # conditions in manifest order
    kinds: dict[str, str]  # condition -> kind
    parents: dict[str, StoredRun]  # condition -> its newest parent run
    chosen: dict[RunKey, StoredRun]  # newest child run per (condition, seed, role)
    missing: list[str]  # runs that did not finish, conditions never run


def select_runs(store: Store, experiment: str) -> Selection:
    """The newest parent run per condition and, under it, the newest run per (seed, role)."""
    exp_id = store.experiment_id(experiment, create=False)
    runs = store.runs(exp_id)
    parents: dict[str, StoredRun] = {}
    for run in runs:
        if run.tags.get(schema.LEVEL) == schema.LEVEL_CONDITION and schema.CONDITION in run.tags:
            parents.setdefault(run.tags[schema.CONDITION], run)
    if not parents:
        raise StoreError(f"experiment {experiment!r} has no condition runs; run its manifest first")
    # the manifest of the latest `suite run` (a condition it dropped keeps an older parent)
    newest = max(parents.values(), key=lambda p: _int_tag(p.tags.get(schema.MANIFEST_AT)))
    manifest = _manifest(store, newest)
    order = [c["name"] for c in manifest.get("conditions", [])] or list(parents)
    every = manifest["experiment"]["seeds"]
    asked = {c["name"]: c.get("seeds") or every for c in manifest.get("conditions", [])}

    chosen: dict[RunKey, StoredRun] = {}
    missing = []
    for run in runs:
        tags = run.tags
        parent = parents.get(tags.get(schema.CONDITION, ""))
        if parent is None or tags.get(schema.PARENT_RUN_ID) != parent.run_id:
            continue
        seed = _seed(tags.get(schema.SEED))
        if seed is None:
            missing.append(
                f"run {run.run_id} of {tags[schema.CONDITION]}: its seed tag "
                f"{tags.get(schema.SEED)!r} is not a seed; left out"
            )
            continue
        if seed not in asked.get(tags[schema.CONDITION], every):
            continue  # a seed the latest manifest no longer runs is not part of the study
        chosen.setdefault(
            (tags[schema.CONDITION], seed, tags.get(schema.ROLE, schema.ROLE_MODEL)), run
        )
    for (cond, seed, role), run in sorted(chosen.items()):
        if run.status != Status.FINISHED:
            reason = run.tags.get(schema.ERROR, "")
            missing.append(
                f"{cond} seed {seed} ({role}): {run.status}" + (f" — {reason}" if reason else "")
            )
    missing += [f"{c}: no runs in the store (not run yet)" for c in order if c not in parents]
    return Selection(
        manifest=manifest,
        order=order,
        kinds={name: p.tags.get(schema.KIND, "") for name, p in parents.items()},
        parents=parents,
        chosen=chosen,
        missing=missing,
    )


def collect(store: Store, experiment: str, baseline: str | None = None) -> ReportData:
    """Everything the report needs about `experiment`, read from the store.

    Each condition is compared with its baseline from the logged manifest (the same rule as
    `suite.manifest.baselines`); `baseline` names one condition to compare every other with.
    """
    sel = select_runs(store, experiment)
    manifest, attacks_spec = sel.manifest, sel.manifest.get("attacks", [])
    conditions, arch = manifest.get("conditions", []), manifest.get("model", {}).get("arch", "")
    attacks, examples, problems, commits = _attack_frame(store, sel)
    verified, unread = _verify_frame(store, sel)
    first = next(iter(sel.chosen.values()), None)
    open_spans = _open_spans(store, sel)
    return ReportData(
        experiment=experiment,
        setup=_setup(manifest, first.tags if first else {}, store.shown)
        | {"data_source": first.params.get("data.source", "unknown") if first else "unknown"},
        baselines=_matched_baselines(sel, baseline, experiment),
        accuracy=_accuracy_frame(sel),
        curves=_curve_frame(store, sel),
        attacks=attacks,
        masking=_masking_frame(sel),
        examples=examples,
        missing=sel.missing + problems + unread,
        verified=verified,
        synthetic_sets={
            c["name"]: {
                "method": c.get("method"),
                "ipc": c.get("ipc"),
                "iterations": (c.get("params") or {}).get("iterations"),
                "arch": c.get("arch") or arch,
            }
            for c in conditions
            if c.get("kind") == "synthetic"
        },
        floors={
            c["name"]: (c.get("eval") or {}).get("min_test_acc", DEFAULT_ACCURACY_FLOOR)
            for c in conditions
        },
        budgets={
            a["name"]: budget_eps(a["kind"], a.get("params") or {})
            for a in attacks_spec
            if a["kind"] in FIXED_BUDGET_KINDS
        },
        gradient_free=[
            a["name"] for a in attacks_spec if is_gradient_free(a["kind"], a.get("params") or {})
        ],
        attack_params={a["name"]: dict(a.get("params") or {}) for a in attacks_spec},
        attack_commits=commits,
        outside_ensemble=[a["name"] for a in attacks_spec if a.get("ensemble", True) is False],
        protocols={a["name"]: a["protocol"] for a in attacks_spec if a.get("protocol")},
        seeds_of={c["name"]: c["seeds"] for c in conditions if c.get("seeds")},
        trained_in={
            c["name"]: (c.get("norm", "linf"), float(c["eps"]))  # stored before L2: L∞
            for c in conditions
            if c.get("kind") in ("adversarial", "ard")
        },
        trained_by={
            c["name"]: str(c.get("method", "pgd"))
            for c in conditions
            if c.get("kind") == "adversarial"
        },
        controls=_stored_pairs(same_size_controls(conditions, arch), sel.parents),
        coresets=_stored_pairs(same_size_controls(conditions, arch, HERDING_METHOD), sel.parents),
        matched=_stored_pairs(accuracy_matched_controls(conditions), sel.parents),
        primary=manifest["experiment"].get("primary"),
        equivalence_margin=float(manifest["experiment"].get("equivalence_margin", 0.9)),
        run_seconds=busy_seconds([s for spans in open_spans.values() for s in spans]),
        job_seconds=_job_seconds(sel, open_spans),
    )


def _open_spans(store: Store, sel: Selection) -> dict[tuple[str, int, str], list[Span]]:
    """The spans each finished chosen run was open (`run_spans`)."""
    return {
        key: run_spans(
            run,
            store.metric_history(run.run_id, schema.OPEN_SECONDS)
            if schema.OPEN_SECONDS in run.metrics
            else [],
        )
        for key, run in sel.chosen.items()
        if run.status == Status.FINISHED
    }


def run_spans(run: StoredRun, opened: list[tuple[int, float]]) -> list[Span]:
    """The (start, end) ms spans `run` was open: each recorded opening (`opened`: OPEN_SECONDS'
    (step = its start in ms, seconds)); before the first, the run's start to its end as MLflow
    keeps them (which a reopening moves), cut where no metric was logged for LEGACY_GAP_MS, so
    the days before a run of an older version was reopened do not count as compute."""
    recorded = [(start, start + round(seconds * 1000)) for start, seconds in opened]
    first = min((start for start, _ in recorded), default=None)
    end = run.end_ms if first is None else first
    if run.start_ms is None or end is None:
        return recorded
    marks = [run.start_ms, *(t for t in run.metric_ms if run.start_ms < t < end)]
    if first is None:
        marks.append(end)
    legacy, low = [], marks[0]
    for before, after in zip(marks, marks[1:], strict=False):
        if after - before > LEGACY_GAP_MS:
            legacy.append((low, before))
            low = after
    return [*legacy, (low, marks[-1]), *recorded]


def _job_seconds(sel: Selection, spans: dict[tuple[str, int, str], list[Span]]) -> float:
    """The finished runs' open time summed over jobs (condition × seed; a teacher's run and its
    student's overlap inside one job): the compute of one process running them one at a time."""
    jobs: dict[tuple[str, int], list[Span]] = {}
    for (cond, seed, _), run_spans_ in spans.items():
        jobs.setdefault((cond, seed), []).extend(run_spans_)
    return sum(busy_seconds(found) for found in jobs.values())


def busy_seconds(spans: list[Span]) -> float:
    """Seconds during which at least one of the (start, end) spans in ms was open: the compute time
    of runs that overlap (a teacher stays open while its student trains) or were reopened."""
    total, reach = 0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total, reach = total + (end - start), end
        elif end > reach:
            total, reach = total + (end - reach), end
    return total / 1000


def _accuracy_frame(sel: Selection) -> pd.DataFrame:
    rows = [
        {
            "condition": cond,
            "kind": sel.kinds.get(cond, ""),
            "role": role,
            "seed": seed,
            "val_acc": run.metrics.get(schema.FINAL_VAL_ACC, np.nan),
            "test_acc": run.metrics.get(schema.FINAL_TEST_ACC, np.nan),
            "status": run.status,
            "error": run.tags.get(schema.ERROR, ""),
        }  # fmt: skip
        for (cond, seed, role), run in sel.chosen.items()
    ]
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def _curve_frame(store: Store, sel: Selection) -> pd.DataFrame:
    rows = [
        {
            "condition": cond,
            "role": role,
            "seed": seed,
            "epoch": step,
            "metric": metric,
            "value": value,
        }  # fmt: skip
        for (cond, seed, role), run in sel.chosen.items()
        for metric in schema.CURVE_METRICS
        if metric in run.metrics
        for step, value in store.metric_history(run.run_id, metric)
    ]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


RECORD_COLUMNS = frozenset(
    {
        "sample_index",
        "label",
        "clean_pred",
        "adv_pred",
        "clean_correct",
        "success",
        "l0",
        "l2",
        "linf",
    }
)  # what the report reads of every attack's records


def _attack_frame(
    store: Store, sel: Selection
) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[str], dict[str, list[str]]]:
    """Every attack's per-sample records of every chosen run, the example images (of the first
    seed where present, else any seed) by `label/attack`, a line per record set that could not
    be read (its run is then incomplete in the report), and per attack the commits whose code
    computed its results (a run's own commit where the result predates that tag)."""
    frames, examples, problems = [], {}, []
    commits: dict[str, set[str]] = {}
    attack_kinds = {a["name"]: a["kind"] for a in sel.manifest.get("attacks", [])}
    first_seed = min(sel.manifest["experiment"]["seeds"])
    for (cond, seed, role), run in sel.chosen.items():
        label = model_label(cond, role)
        for name, kind in attack_kinds.items():
            result = schema.attack_result(name)
            if schema.result_tag(result) not in run.tags:
                continue
            commit = run.tags.get(schema.result_commit(result)) or run.tags.get(schema.COMMIT)
            commits.setdefault(name, set()).add(commit or "unknown")
            try:
                rows = store.load_table(run.run_id, schema.attack_records(name))
            except StoreError as exc:  # a broken artifact: this run is incomplete, the rest renders
                problems.append(f"{cond} seed {seed} ({role}), attack {name}: {exc}")
                continue
            if not set(rows.columns) >= RECORD_COLUMNS:
                problems.append(
                    f"{cond} seed {seed} ({role}), attack {name}: run {run.run_id}: "
                    f"{schema.attack_records(name)} lacks columns "
                    f"{', '.join(sorted(RECORD_COLUMNS - set(rows.columns)))}; left out"
                )
                continue
            rows.insert(0, "condition", label)
            rows.insert(1, "kind", sel.kinds.get(cond, ""))
            rows.insert(2, "seed", seed)
            rows.insert(3, "attack", name)
            rows.insert(4, "attack_kind", kind)
            if "eps" not in rows:
                rows["eps"] = np.nan  # the frame's contract: NaN unless the attack is fixed-budget
            frames.append(rows)
            if f"{label}/{name}" not in examples or seed == first_seed:
                found = _examples(store, run.run_id, name)
                if found is not None:
                    examples[f"{label}/{name}"] = found
    attacks = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ATTACK_COLUMNS)
    )
    return attacks, examples, problems, {a: sorted(c) for a, c in commits.items()}


VERIFY_COLUMNS = ["condition", "seed", "verification", "kind", "norm", *VERIFY_RECORD_COLUMNS]


def _verify_frame(store: Store, sel: Selection) -> tuple[pd.DataFrame, list[str]]:
    """Every verification's per-digit records of every chosen run (`suite.verify.kinds`), and a
    line per record set that could not be read (its run is then incomplete in the report)."""
    frames, problems = [], []
    specs = sel.manifest.get("verify", [])
    for (cond, seed, role), run in sel.chosen.items():
        for spec in specs:
            name = spec["name"]
            if schema.result_tag(schema.verify_result(name)) not in run.tags:
                continue
            try:
                rows = store.load_table(run.run_id, schema.verify_records(name))
            except StoreError as exc:
                problems.append(f"{cond} seed {seed} ({role}), verification {name}: {exc}")
                continue
            if not set(rows.columns) >= set(VERIFY_RECORD_COLUMNS):
                problems.append(
                    f"{cond} seed {seed} ({role}), verification {name}: run {run.run_id}: "
                    f"{schema.verify_records(name)} lacks columns; left out"
                )
                continue
            head = {"condition": model_label(cond, role), "seed": seed, "verification": name,
                    "kind": spec["kind"], "norm": spec.get("norm", "linf")}  # fmt: skip
            frames.append(rows[VERIFY_RECORD_COLUMNS].assign(**head)[VERIFY_COLUMNS])
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=VERIFY_COLUMNS)
    return frame, problems


def _masking_frame(sel: Selection) -> pd.DataFrame:
    """The gradient-masking diagnostic of every chosen run that ran it (`flagged` as a bool)."""

    def metrics(run: StoredRun) -> dict[str, object]:
        got = {
            k: run.metrics[schema.result_metric(schema.MASKING, k)] for k in schema.MASKING_METRICS
        }
        return got | {"flagged": bool(got["flagged"])}

    rows = [
        {"condition": model_label(cond, role), "seed": seed, **metrics(run)}
        for (cond, seed, role), run in sel.chosen.items()
        if schema.result_metric(schema.MASKING, "flagged") in run.metrics
    ]
    return pd.DataFrame(rows, columns=["condition", "seed", *schema.MASKING_METRICS])


def _matched_baselines(sel: Selection, baseline: str | None, experiment: str) -> dict[str, str]:
    """Condition (and attacked teacher) → the condition it is compared with."""
    matched = _baselines(sel.manifest, sel.order, baseline, experiment)
    for name, base in matched.items():
        if base not in sel.parents:
            raise StoreError(
                f"baseline condition {base!r} of {name!r} has no runs in {experiment!r}; run it, "
                f"or choose one of {sorted(sel.parents)} with --baseline"
            )
    for cond in sel.manifest.get("conditions", []):  # attacked teachers: the condition's baseline
        if cond.get("attack_teacher") and cond["name"] in matched:
            matched[f"{cond['name']}/teacher"] = matched[cond["name"]]
    return matched


def _baselines(
    manifest: dict, order: list[str], baseline: str | None, experiment: str
) -> dict[str, str]:
    """Condition → baseline: every other condition against `baseline` when given, else the
    logged manifest's per-condition baselines."""
    if baseline is not None:
        return {c: baseline for c in order if c != baseline}
    try:
        return baselines(
            manifest.get("conditions", []),
            manifest.get("train", {}).get("epochs", 0),
            manifest.get("model", {}).get("arch", ""),
        )
    except ManifestFieldError as exc:
        raise StoreError(
            f"experiment {experiment!r}: {exc.loc}: {exc.message}; choose one with --baseline"
        ) from None


def _seed(tag: str | None) -> int | None:
    """A seed tag as the int it must be, or None when it is missing or not a seed."""
    return int(tag) if tag is not None and tag.isdigit() and len(tag) <= 10 else None


def _check_shape(manifest: dict, run_id: str) -> dict:
    """The stored manifest's parts the report reads, with their types checked: a hand-edited or
    planted manifest is one line naming the run, not a traceback deep in the report."""

    def table_list(key: str) -> bool:
        items = manifest.get(key, [])
        return isinstance(items, list) and all(
            isinstance(i, dict)
            and isinstance(i.get("name"), str)
            and isinstance(i.get("kind"), str)
            and isinstance(i.get("params", {}), dict)
            for i in items
        )

    experiment = manifest.get("experiment")
    seeds = experiment.get("seeds") if isinstance(experiment, dict) else None
    checks = {
        "experiment.seeds": isinstance(seeds, list)
        and bool(seeds)
        and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds),
        "experiment.primary": isinstance(experiment, dict)
        and isinstance(experiment.get("primary", ""), str | None),
        "experiment.equivalence_margin": isinstance(experiment, dict)
        and isinstance(experiment.get("equivalence_margin", 0.9), int | float)
        and 0.5 < experiment.get("equivalence_margin", 0.9) < 1,
        "conditions": table_list("conditions")
        and all(
            c.get("seeds") is None
            or isinstance(c["seeds"], list)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in c["seeds"])
            for c in manifest.get("conditions", [])
        ),
        "attacks": table_list("attacks"),
        "data": isinstance(manifest.get("data", {}), dict),
        "train": isinstance(manifest.get("train", {}), dict),
        "model": isinstance(manifest.get("model", {}), dict),
    }
    broken = [k for k, ok in checks.items() if not ok]
    if broken:
        raise StoreError(
            f"run {run_id}: {schema.MANIFEST} is not a manifest the suite wrote ({broken[0]} is "
            "malformed); rerun the manifest to rebuild it"
        )
    return manifest


def _stored_pairs(pairs: dict[str, str], parents: Container[str]) -> dict[str, str]:
    """The (condition → control) pairs of which both have runs in the store."""
    return {c: control for c, control in pairs.items() if c in parents and control in parents}


def _int_tag(value: str | None) -> int:
    """A tag holding an integer, as one (-1 where absent or not one)."""
    try:
        return int(value or "")
    except ValueError:
        return -1


def _manifest(store: Store, parent: StoredRun) -> dict:
    try:
        manifest = store.load_json(parent.run_id, schema.MANIFEST)
    except Exception as exc:  # an artifact store that lost the file: say which run
        raise StoreError(
            f"run {parent.run_id} lacks {schema.MANIFEST} ({type(exc).__name__}); "
            "rerun the manifest to rebuild it"
        ) from None
    if not isinstance(manifest, dict):
        raise StoreError(f"run {parent.run_id}: {schema.MANIFEST} is not a manifest; rerun it")
    return _check_shape(manifest, parent.run_id)


def _examples(store: Store, run_id: str, attack: str) -> np.ndarray | None:
    try:
        return store.load_npy(run_id, schema.attack_examples(attack))
    except Exception:  # older runs have no examples: the figure is simply left out
        return None


def _setup(manifest: dict, tags: dict, uri: str) -> dict[str, object]:
    """The report's Set-up section, read from the logged manifest and run tags (not re-typed)."""
    data, train = manifest.get("data", {}), manifest.get("train", {})
    setup: dict[str, object] = {
        "dataset": data.get("dataset"),
        "train_samples": data.get("train_samples") or "all",
        "val_samples": data.get("val_samples"),
        "split_seed": data.get("split_seed"),
        "model.arch": manifest.get("model", {}).get("arch"),
        **{f"train.{k}": v for k, v in train.items()},
        "seeds": manifest.get("experiment", {}).get("seeds"),
        "attack_seed": manifest.get("experiment", {}).get("attack_seed"),
        "conditions": [
            f"{c['name']}: " + ", ".join(f"{k}={v}" for k, v in c.items() if k != "name")
            for c in manifest.get("conditions", [])
        ],
        "attacks": [
            f"{a['name']}: {a['kind']}, samples={a.get('samples') or data.get('attack_samples')}, "
            + ", ".join(f"{k}={v}" for k, v in a.get("params", {}).items())
            for a in manifest.get("attacks", [])
        ],
        "suite_version": tags.get(schema.VERSION, "unknown"),
        "git_commit": tags.get(schema.COMMIT, "unknown"),
        "store": uri,
    }
    return setup
