"""Attack one trained model with every attack of the manifest, on the experiment's shared subset,
then run the gradient-masking diagnostic.

Results are cached per (model run, config hash): a rerun skips what was logged, redoes the rest.
"""

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from suite import schema
from suite.attacks import (
    ATTACK_PARAMS,
    LOGIT_L2_KIND,
    MINIMAL_NORMS,
    SOFTMAX_KINDS,
    run_attack,
    summarize,
)
from suite.attacks.diagnostics import (
    MASKING_RATIO,
    is_masking,
    saturated_fraction,
    softmax_gradient_norms,
)
from suite.attacks.targets import rows_per_sample
from suite.attacks.transfer import SCALABLE_NORMS, transfer_records
from suite.cache import cached_result, find_attacked_run, load_chunks, save_chunk
from suite.data import NUM_CLASSES
from suite.devices import model_device
from suite.errors import StoreError, SuiteError
from suite.identity import config_hash
from suite.job import Context, ModelRun
from suite.manifest import AttackSpec
from suite.plots import ImageRow, image_grid
from suite.progress import Task

DEFAULT_SOFTMAX_ATTACK = ("fgsm", {"eps": [0.3]})  # the MNIST convention (Madry et al. 2018)
EXAMPLES = 8
CPU_ATTACK_BATCH = 256  # samples per batch on a CPU: bounds the work lost to an interruption
# rows per batch on a GPU: by cw-mnist's activation count ~0.7 MB a row with gradients, ~6 GB in all
GPU_ATTACK_ROWS = 8192


def attack_subset(n_test: int, size: int, seed: int) -> np.ndarray:
    """Test-set indices attacked by every condition: one seeded permutation, so smaller attacks
    take a prefix of the same images and everything pairs by `sample_index`."""
    return np.random.default_rng(seed).permutation(n_test)[: min(size, n_test)]


def attack_model(
    ctx: Context, run: ModelRun, subset: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Run (or reuse) each manifest attack on `run.model`, then the gradient-masking diagnostic;
    return each attack's summary metrics and the diagnostic's."""
    summaries: dict[str, dict[str, float]] = {}
    # direct attacks first: a transfer attack rescales to this model's own median distortion
    for spec in sorted(ctx.manifest.attacks, key=lambda a: is_transfer(run, a)):
        if is_transfer(run, spec):
            summaries[spec.name] = _transfer(ctx, run, spec, subset, summaries)
        else:
            summaries[spec.name] = _one_attack(ctx, run, spec, subset)
    summaries = {a.name: summaries[a.name] for a in ctx.manifest.attacks}
    return summaries, _masking(ctx, run, subset, summaries)


def is_transfer(run: ModelRun, spec: AttackSpec) -> bool:
    """Whether `spec` reaches `run` by transfer: it names a source condition, and `run` is not that
    condition's model under attack (its model or student), on which the images are crafted."""
    crafts = run.condition == spec.source and run.role in schema.ATTACKED_ROLES
    return spec.source is not None and not crafts


def attack_batch_size(
    batch_size: int | None, device: torch.device, n_samples: int, rows_per: int
) -> int:
    """Samples per attack batch (each batch is one checkpoint): the manifest's `batch_size` where it
    sets one; else CPU_ATTACK_BATCH on a CPU, and on a GPU the whole attacked set in one batch (up to
    GPU_ATTACK_ROWS rows, `rows_per` rows per sample), since one tensor program over every digit is
    what keeps a GPU busy."""
    if batch_size is not None:
        return batch_size
    if device.type == "cpu":
        return CPU_ATTACK_BATCH
    return max(1, min(n_samples, GPU_ATTACK_ROWS // rows_per))


def _one_attack(
    ctx: Context, run: ModelRun, spec: AttackSpec, subset: np.ndarray
) -> dict[str, float]:
    idx = subset[: spec.samples or ctx.manifest.data.attack_samples]
    cfg = config_hash(spec, idx.tolist(), ctx.manifest.experiment.attack_seed)

    def compute() -> dict[str, float]:
        records, x_adv = _attack_in_checkpointed_chunks(ctx, run, spec, idx, cfg)
        rows = records["sample_index"].to_numpy(copy=True)
        x = ctx.data.test.x[rows]  # the clean image of each record row
        if spec.source is not None:
            records["source"] = spec.source
        ctx.store.log_table(run.run_id, schema.attack_records(spec.name), records)
        ctx.store.log_arrays(
            run.run_id,
            schema.attack_images(spec.name),
            {"sample_index": rows, "x_adv": x_adv.numpy().astype(np.float32)},
        )
        ctx.store.log_artifact_bytes(
            run.run_id,
            schema.attack_examples(spec.name),
            lambda p: np.save(p, example_array(x, x_adv)),
        )
        ctx.store.log_artifact_bytes(
            run.run_id,
            schema.attack_picture(spec.name),
            lambda p: example_grid(x, x_adv, records, p),
        )
        return summarize(records)

    return cached_result(ctx, run, schema.attack_result(spec.name), cfg, compute)


def _transfer(
    ctx: Context,
    run: ModelRun,
    spec: AttackSpec,
    subset: np.ndarray,
    summaries: dict[str, dict[str, float]],
) -> dict[str, float]:
    """Evaluate on `run.model` the adversarials `spec` crafted on its source condition's model at
    the same seed (read from the store, never recomputed), as they are and rescaled to this
    model's own median distortion under the manifest's direct attack of the same kind."""
    idx = subset[: spec.samples or ctx.manifest.data.attack_samples]
    source_cfg = config_hash(spec, idx.tolist(), ctx.manifest.experiment.attack_seed)
    store, name, result = ctx.store, spec.name, schema.attack_result(spec.name)
    source = find_attacked_run(
        store, ctx.experiment_id, spec.source, run.seed, result, source_cfg, ctx.data.digest
    )
    if source is None:
        raise SuiteError(
            f"attack {name}: condition {spec.source!r} seed {run.seed} has no adversarials of this "
            f"attack in the store; run that condition first (suite run FILE --only {spec.source})"
        )
    norm, size = _own_median(ctx, spec, summaries)
    cfg = config_hash(source_cfg, source.run_id, norm, size)

    def compute() -> dict[str, float]:
        src = store.load_table(source.run_id, schema.attack_records(name))
        arrays = store.load_arrays(source.run_id, schema.attack_images(name))
        rows = src["sample_index"].to_numpy(np.int64, copy=True)
        x = ctx.data.test.x[rows]
        x_adv = arrays.get("x_adv")
        if (
            x_adv is None
            or x_adv.dtype != np.float32
            or x_adv.shape != tuple(x.shape)
            or not np.array_equal(arrays.get("sample_index"), rows)
            or not np.isfinite(x_adv).all()
        ):
            raise StoreError(
                f"run {source.run_id}: {schema.attack_images(name)} does not match its records; "
                "rerun the source condition with --force"
            )
        records = transfer_records(
            run.model, x, torch.from_numpy(x_adv).clamp(0, 1), src, scale_norm=norm, scale_to=size
        )
        records["source"] = spec.source
        store.log_table(run.run_id, schema.attack_records(name), records)
        return summarize(records)

    return cached_result(ctx, run, result, cfg, compute)


def _own_median(
    ctx: Context, spec: AttackSpec, summaries: dict[str, dict[str, float]]
) -> tuple[str | None, float | None]:
    """(norm, median distortion) of this model under the manifest's direct attack of `spec`'s kind,
    where that kind minimises a norm a perturbation can be rescaled in; else (None, None)."""
    norm = MINIMAL_NORMS.get(spec.kind)
    own = next((a for a in ctx.manifest.attacks if a.kind == spec.kind and a.source is None), None)
    if norm not in SCALABLE_NORMS or own is None:
        return None, None
    median = summaries[own.name].get(f"median_{norm}", math.nan)
    return (norm, median) if math.isfinite(median) else (None, None)


def _attack_in_checkpointed_chunks(
    ctx: Context, run: ModelRun, spec: AttackSpec, idx: np.ndarray, cfg: str
) -> tuple[pd.DataFrame, torch.Tensor]:
    """Attack `idx` one batch at a time on the model's device, logging each batch's records and
    images under a folder named by the config hash and batch size; batches an interrupted earlier
    attempt already logged are loaded instead of recomputed (each sample's result depends only on
    the sample and the seed, so the pieces join seamlessly; the batch size is in the folder name, so
    a resume on another device never joins batches of different sizes)."""
    store, device = ctx.store, model_device(run.model)
    per = rows_per_sample(spec.params, NUM_CLASSES)
    chunk = attack_batch_size(spec.batch_size, device, len(idx), per)
    folder = schema.checkpoint_folder(spec.name, cfg, chunk)
    rows = chunk if device.type == "cpu" else chunk * per  # a GPU takes a batch's rows at once
    done = {} if ctx.force else _saved_chunks(load_chunks(store, run.run_id, folder))
    task = ctx.progress.task(
        f"{run.condition} seed {run.seed} {run.role}: {spec.name}", per * len(idx)
    )
    try:
        for lo in range(0, len(idx), chunk):
            if lo in done:
                continue
            part = idx[lo : lo + chunk]
            ok_before = sum(int(r["success"].sum()) for r, _ in done.values())
            result = run_attack(
                spec.kind, spec.params, run.model, ctx.data.test.x[part], ctx.data.test.y[part], part,
                seed=ctx.manifest.experiment.attack_seed, batch_size=rows,
                on_batch=_chunk_progress(task, lo * per, ok_before),
            )  # fmt: skip
            save_chunk(store, run.run_id, folder, lo, result.records, result.x_adv.numpy())
            done[lo] = (result.records, result.x_adv)
    finally:
        task.close()
    ordered = [done[lo] for lo in sorted(done)]
    return (
        pd.concat([r for r, _ in ordered], ignore_index=True),
        torch.cat([a for _, a in ordered]),
    )


def _chunk_progress(task: Task, offset: int, ok_before: int) -> Callable[[int, int], None]:
    """The progress callback of the batch that starts at row `offset`, after `ok_before` successes
    of the batches before it."""

    def update(n: int, ok: int) -> None:
        task.update(offset + n, success=f"{ok_before + ok}/{offset + n}")

    return update


def _saved_chunks(
    chunks: dict[int, tuple[pd.DataFrame, np.ndarray]],
) -> dict[int, tuple[pd.DataFrame, torch.Tensor]]:
    """The batches an interrupted attempt saved, their images as tensors."""
    return {lo: (records, torch.from_numpy(images)) for lo, (records, images) in chunks.items()}


def _masking(
    ctx: Context, run: ModelRun, subset: np.ndarray, summaries: dict[str, dict[str, float]]
) -> dict[str, float]:
    """(a) saturated softmax-gradient fraction, (b) softmax-attack success, (c) C&W-on-logits
    success and median L2, on the attacked subset; logged as `masking.*` metrics."""
    attacks = ctx.manifest.attacks
    cw = next((a for a in attacks if a.kind == LOGIT_L2_KIND and a.source is None), None)
    if cw is None:
        return {}
    softmax = next((a for a in attacks if a.kind in SOFTMAX_KINDS and a.source is None), None)
    idx = subset[: (softmax or cw).samples or ctx.manifest.data.attack_samples]
    cfg = config_hash("masking", cw, softmax, DEFAULT_SOFTMAX_ATTACK, MASKING_RATIO, idx.tolist())

    def compute() -> dict[str, float]:
        x, y, device = ctx.data.test.x[idx], ctx.data.test.y[idx], model_device(run.model)
        if softmax is None:
            kind, params = DEFAULT_SOFTMAX_ATTACK
            records = run_attack(
                kind,
                ATTACK_PARAMS[kind](**params),
                run.model,
                x,
                y,
                idx,
                seed=ctx.manifest.experiment.attack_seed,
                batch_size=attack_batch_size(None, device, len(idx), 1),
            ).records
            soft = summarize(records)
        else:
            soft = summaries[softmax.name]
        norms = softmax_gradient_norms(run.model, x, y)
        result = {
            "saturated_fraction": saturated_fraction(norms),
            "softmax_success": soft["success_rate"],
            "cw_success": summaries[cw.name]["success_rate"],
            "cw_median_l2": summaries[cw.name]["median_l2"],
        }
        result["flagged"] = float(is_masking(result["softmax_success"], result["cw_success"]))
        ctx.store.log_table(
            run.run_id,
            schema.GRADIENT_NORMS,
            pd.DataFrame({"sample_index": idx, "softmax_grad_norm": norms.numpy()}),
        )
        return result

    return cached_result(ctx, run, schema.MASKING, cfg, compute)


def example_array(x: torch.Tensor, x_adv: torch.Tensor, k: int = EXAMPLES) -> np.ndarray:
    """[k, 3, 28, 28]: clean, adversarial, perturbation of the first k attacked rows (`x` holds the
    clean image of each row) — the same sample indices in every condition, so reports can set them
    side by side."""
    clean, adv = x[:k, 0].numpy(), x_adv[:k, 0].numpy()
    return np.stack([clean, adv, adv - clean], axis=1).astype(np.float32)


def example_grid(
    x: torch.Tensor, x_adv: torch.Tensor, records: pd.DataFrame, path, k: int = 8
) -> None:
    """PNG of clean / adversarial / perturbation for the first `k` successful rows, titled with the
    label, the adversarial prediction and the L2 distortion (each perturbation on its own colour
    scale); `x`, `x_adv` and `records` are row-aligned (a sample has several rows with
    `target_mode = "all"`)."""
    ok = np.flatnonzero(records["success"].to_numpy())[:k]
    shown = records.iloc[ok]
    clean, adv = x.numpy()[ok, 0], x_adv.numpy()[ok, 0]
    delta = adv - clean
    bound = np.maximum(np.abs(delta).max(axis=(1, 2)), 1e-6)
    l2 = [f"L2 {v:.2f}" if not math.isnan(v) else "" for v in shown["l2"]]
    image_grid(
        [
            ImageRow(images=clean, label="clean", titles=[f"{int(v)}" for v in shown["label"]]),
            ImageRow(
                images=adv, label="adversarial", titles=[f"→{int(v)}" for v in shown["adv_pred"]]
            ),
            ImageRow(
                images=delta, label="perturbation", cmap="seismic", lo=-bound, hi=bound, titles=l2
            ),
        ],
        path,
    )
