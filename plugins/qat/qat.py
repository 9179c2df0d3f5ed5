"""``qat``: quantization-aware fine-tuning by distillation from the float model, after any quantizer.

``quantize{gguf=Q3_K,method=gptq},qat{mode=block}`` keeps the quantizer's grid (scheme, bits, groups, a
storage layout's block scales) and trains what the grid lets move: the codes (straight-through rounding, or
AdaRound's learnable rounding) and, off a storage layout, the scales (LSQ, as a log-factor), through the torch
interpreter of the IR (:mod:`edgec.api.torch_ir`). The trained codes and scales are written back as ordinary
``QuantizedTensor`` s on the same grid, so every target carries the result exactly and ``--verify`` holds.

* **Teacher:** the model before the pipeline's first lossy pass (``ctx.float_model``, kept by the PassManager).
* **Objective:** a language model's KL(teacher || student) on the next-token distributions (the logits,
  temperature 1), MSE of the outputs otherwise; ``task=W`` adds W x the next-token cross-entropy on the
  calibration tokens (language models).
* **mode=block** (BRECQ/OmniQuant style, the default): the graph is cut where one activation carries everything
  later nodes read (a transformer's residual stream between blocks); each block's weights are trained ``steps``
  steps to reproduce the float block's output (MSE) from the quantized model's own input to it, then frozen and
  the quantized stream moves on. The last block (the head) uses the end-to-end objective. Memory: the float and
  quantized models and one block's training state (its rounding variables and optimizer state, one window's
  activations); the other quantized weights are dequantized where they are read.
* **embeddings=false** (default): token-embedding tables (Gather data, a tied head's too) keep the quantizer's
  codes; a 28M-entry table's AdaRound state alone peaks above 1.5 GB.
* **mode=e2e:** every trainable weight at once, ``steps`` steps of the end-to-end objective.
* **Held out:** the last ``holdout`` calibration windows (where more than twice as many are given) are not trained
  on. A block's trained weights are kept only where they lower the block's loss on them (hard rounding), else the
  block keeps the quantizer's; the whole result likewise (e2e). Training can overfit a few thousand tokens: on
  SmolLM2 an unguarded block-wise run made GPTQ's Q4_0 worse on held-out text.
* **Checks** (``checks=``, as ``mixed-precision{checks=...}``: ``toolcall:FILE``, ``json:``, ``top1:``, any a
  plugin registers): judged against the float model after training; a trained result that breaks one is replaced by
  the quantizer's own (the report says so), and the pass fails, naming the check, when that breaks it too.
* Batches: ``batch`` calibration windows per step (a language model's cut to ``seq`` tokens), drawn by a seeded
  generator; ``lr`` for the rounding variables, ``lr/10`` for the log-scales. Deterministic for a given seed
  and torch thread count.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import numpy as np

from ...errors import EdgecError, UsageError
from ...ir import Model
from ...ir.passes import Pass, PassContext, option

MODES = ("block", "e2e")


@dataclasses.dataclass(frozen=True)
class QAT(Pass):
    """Quantization-aware fine-tuning (distillation from the float model) of the quantized weights' grids."""

    name: ClassVar[str] = "qat"
    summary: ClassVar[str] = "quantization-aware fine-tuning: distil the float model into the quantized grid"
    lossy: ClassVar[bool] = True
    needs_float_model: ClassVar[bool] = True
    mode: str = option("block", choices=MODES, help="block: block-wise reconstruction; e2e: end to end")
    steps: int = option(100, check=lambda v: v >= 0, allowed=">= 0", help="optimizer steps (per block in mode=block)")
    lr: float = option(
        0.05,
        check=lambda v: v > 0,
        allowed="> 0",
        help="Adam's learning rate of the rounding variables (code units for rounding=ste); lr/10 for the log-scales",
    )
    batch: int = option(4, check=lambda v: v > 0, allowed="> 0", help="calibration windows per step")
    seq: int = option(
        128, check=lambda v: v >= 0, allowed=">= 0", help="a language model's windows cut to SEQ tokens (0: whole)"
    )
    rounding: str = option(
        "adaround", choices=("adaround", "ste"), help="AdaRound's learnable rounding, or straight-through rounding"
    )
    scales: bool = option(True, help="learn the scales (LSQ) where no storage layout fixes them")
    task: float = option(0.0, check=lambda v: v >= 0, allowed=">= 0", help="weight of the next-token loss")
    samples: int = option(0, check=lambda v: v >= 0, allowed=">= 0", help="calibration windows used (0: all of them)")
    seed: int = option(0, help="batch order and initialization")
    checks: str = option(
        "",
        help="property checks the result must keep, ';'-separated name:arg (e.g. toolcall:calls.jsonl); a "
        "trained result that breaks one is replaced by the quantizer's, and an error is raised when both break it",
    )
    embeddings: bool = option(
        False,
        help="train token-embedding tables too (a weight a Gather reads, a tied head's included); off, they keep the "
        "quantizer's codes: AdaRound holds about 18 bytes per entry while training (SmolLM2's 28M-entry table: over "
        "1.5 GB at its peak), and a calibration text reaches few of a table's rows",
    )
    holdout: int = option(
        8,
        check=lambda v: v >= 0,
        allowed=">= 0",
        help="calibration windows held out of training (the last ones, where more than twice as many are given): "
        "trained weights are kept only where they lower the loss on them; output checks judge them too",
    )

    def run(self, model: Model, ctx: PassContext) -> bool:
        teacher_model = ctx.float_model
        if teacher_model is None:
            raise UsageError(
                "qat distils from the float model, and this pipeline has none before it: put qat after a quantizer "
                "in the same pipeline, e.g. -p 'quantize{bits=4,method=gptq},qat'"
            )
        if ctx.calibration is None:
            raise UsageError("qat trains on calibration data: pass --calib (a text file for a language model)")
        _same_structure(teacher_model, model)
        import torch

        from ...api.torch_ir import IRModule, trainable_weights

        torch.manual_seed(self.seed)
        tables = set() if self.embeddings else _tables(model)
        names = [w for w in trainable_weights(model) if w not in tables]
        if not names:
            return False
        if self.mode == "e2e":
            floats = _float_weights(teacher_model, model, set(names))
            student = IRModule(
                model, rounding=self.rounding, learn_scales=self.scales, float_weights=floats, trainable=names
            )
        else:  # one block's weights trainable at a time, every other quantized weight dequantized where it is used
            student = IRModule(model, rounding=self.rounding, learn_scales=self.scales, trainable=(), lazy=True)
        judge = _Judge(self, teacher_model, ctx) if self.checks else None
        before = {w: model.graph.value(w).const for w in names}  # the quantizer's, if checks fail

        def keep_quantizers() -> None:  # put the quantizer's weights back (training did not help, or broke a check)
            for w, q in before.items():
                model.graph.value(w).const = q

        teacher = IRModule(teacher_model, quant="frozen", act_quant=False)
        teacher.eval()
        student.train()
        data = _windows(model, ctx, self.seq, self.samples)
        n_train = len(data) - self.holdout if len(data) > 2 * self.holdout else len(data)
        train, held = list(range(n_train)), list(range(n_train, len(data))) or list(range(n_train))
        lm = _is_lm(model)
        report: dict[str, Any] = {
            "mode": self.mode,
            "steps": self.steps,
            "windows": len(data),
            "held_out": len(data) - n_train,
        }
        t0 = time.perf_counter()
        report["loss_before"] = self._hard_loss(student, teacher, [data[i] for i in held], lm)
        if self.mode == "e2e":
            blocks = [names]
            report["loss"] = self._train_e2e(student, teacher, data, train, lm)
        else:
            blocks, report["loss"] = self._train_blocks(
                model, teacher_model, student, teacher, names, data, train, held, lm
            )
        report["loss_after"] = self._hard_loss(student, teacher, [data[i] for i in held], lm)
        student.write_back()
        if report["loss_after"] >= report["loss_before"]:  # e2e (or every block) did not help where it counts
            keep_quantizers()
            report["kept"] = "the quantizer's weights: training did not lower the held-out loss"
        report.update(
            blocks=len(blocks),
            weights=len(names),
            seconds=round(time.perf_counter() - t0, 2),
        )
        if judge is not None:
            report["checks"] = verdicts = judge(model)
            failed = [d for d, r in verdicts.items() if not r["passed"]]
            if failed:  # keep the quantizer's weights where they keep the checks
                keep_quantizers()
                report["checks_before_qat"] = verdicts0 = judge(model)
                still = [d for d, r in verdicts0.items() if not r["passed"]]
                if still:
                    raise EdgecError(
                        f"qat: the trained model breaks check {failed[0]} ({verdicts[failed[0]]['detail']}), and so "
                        f"does the quantizer's result before qat ({verdicts0[still[0]]['detail']}): quantize wider "
                        "(more bits, a larger GGUF type) or relax checks="
                    )
                report["reverted"] = f"the trained weights broke check {failed[0]}: the quantizer's weights kept"
        model.reports[self.name] = report
        return True

    def _hard_loss(self, student, teacher, data, lm: bool) -> float:
        """The end-to-end objective of the quantized model as it would be written (hard rounding), averaged
        over ``data`` (the held-out windows): what the report's loss_before / loss_after compare."""
        import torch

        out = student.model.graph.outputs[0].name
        was = student.training
        student.eval()
        with torch.no_grad():
            ws = student.weights()
            vals = [
                float(self._final_loss(student.run(d, [out], ws)[out], teacher.run(d, [out])[out], d, lm)) for d in data
            ]
        student.train(was)
        return float(np.mean(vals))

    # -- objectives ---------------------------------------------------------------------------------------------
    def _final_loss(self, got, want, feeds, lm: bool):
        import torch

        if lm:
            s = torch.log_softmax(got, -1)
            t = torch.log_softmax(want, -1)
            loss = (t.exp() * (t - s)).sum(-1).mean()
            if self.task:
                ids = next(iter(feeds.values()))
                ce = torch.nn.functional.cross_entropy(
                    got[:, :-1].reshape(-1, got.shape[-1]), torch.as_tensor(ids)[:, 1:].reshape(-1)
                )
                loss = loss + self.task * ce
            return loss
        return ((got - want) ** 2).mean()

    def _batches(self, pool: list[int], steps: int):
        rng = np.random.default_rng(self.seed)
        for _ in range(steps):
            yield rng.choice(pool, size=min(self.batch, len(pool)), replace=False)

    def _optimizer(self, student, names):
        import torch

        mods = student.fake_quant()
        codes, scales = [], []
        for w in names:
            m = mods[w]
            for pname, prm in m.named_parameters():
                if not prm.requires_grad:
                    continue
                (scales if pname == "log_scale" else codes).append(prm)
        groups = [{"params": codes, "lr": self.lr}]
        if scales:
            groups.append({"params": scales, "lr": self.lr / 10})
        return torch.optim.Adam(groups)

    def _step(self, opt, student, names, losses, step: int, fixed: list[str] | None = None) -> float:
        """One optimizer step on the mean of the windows' losses. The trained weights ``names`` (and the frozen
        ones ``fixed`` the windows read, dequantized once) are computed once for the step and shared by the
        windows, which run one by one (not stacked: values without a batch axis need no care), each window's
        backward pass right after its forward (gradient accumulation on the shared weights, then one pass back to
        the parameters): one window's activations are held at a time, not the whole batch's."""
        import torch

        opt.zero_grad()
        ws = student.weights(names)
        leaves = {k: v.detach().requires_grad_(True) for k, v in ws.items()}
        with torch.no_grad():
            shared = {**{w: student.weight(w) for w in fixed or ()}, **leaves}
        fit = 0.0
        for f in losses:
            loss = f(shared) / len(losses)
            loss.backward()
            fit += float(loss.detach())
        pairs = [(ws[k], leaves[k].grad) for k in ws if leaves[k].grad is not None]
        if pairs:
            torch.autograd.backward([w for w, _ in pairs], [g for _, g in pairs])
        penalty = self._penalty(student, names, step, self.steps)
        if penalty.requires_grad:
            penalty.backward()
        opt.step()
        return fit  # the objective's value (AdaRound's regularizer not counted)

    def _train_e2e(self, student, teacher, data, train: list[int], lm: bool) -> dict[str, float]:
        import torch
        from tqdm import tqdm

        out = student.model.graph.outputs[0].name
        opt = self._optimizer(student, list(student.fq_names))
        first = last = float("nan")

        def loss_of(i: int):
            def f(ws):
                with torch.no_grad():
                    want = teacher.run(data[i], [out])[out]
                got = student.run(data[i], [out], ws)[out]
                return self._final_loss(got, want, data[i], lm)

            return f

        names = list(student.fq_names)
        bar = tqdm(self._batches(train, self.steps), total=self.steps, desc="qat e2e", leave=False, disable=None)
        for step, idx in enumerate(bar):
            last = self._step(opt, student, names, [loss_of(int(i)) for i in idx], step)
            first = last if step == 0 else first
            bar.set_postfix(loss=f"{last:.4g}")
        bar.close()
        return {"first": first, "last": last}

    def _penalty(self, student, names, step: int, steps: int):
        import torch

        if self.rounding != "adaround":
            return torch.zeros(())
        # AdaRound's annealed regularizer: off for the first fifth, then beta from 20 down to 2
        frac = step / max(steps, 1)
        if frac < 0.2:
            return torch.zeros(())
        beta = 20 - (20 - 2) * (frac - 0.2) / 0.8
        return 0.01 * student.rounding_penalty(beta, names)

    def _train_blocks(self, model, teacher_model, student, teacher, names, data, train, held, lm: bool):
        """Each block in turn: its weights made trainable, trained, written back into the model where they lower the
        held-out loss, then frozen again (memory: one block's trainable weights and optimizer state)."""
        import torch
        from tqdm import tqdm

        from ...api.capture import trim_heap

        blocks = split_blocks(model, set(names))
        out = model.graph.outputs[0].name
        # every window's feeds for the current block: the graph inputs and the block's input activation, the
        # teacher's (float) and the student's (quantized); nodes that depend on no trainable weight (a rotary
        # table, a mask) are recomputed from the graph inputs
        t_in: list[dict[str, Any]] = [dict(d) for d in data]
        s_in: list[dict[str, Any]] = [dict(d) for d in data]
        losses: dict[str, dict[str, Any]] = {}
        bar = tqdm(total=len(blocks) * self.steps, desc="qat blocks", leave=False, disable=None)
        for b, blk in enumerate(blocks):
            final = b == len(blocks) - 1
            target = out if final else blk.output
            want = None
            if not final:  # the float block's outputs, once (a language model's logits are recomputed per step)
                with torch.no_grad():
                    want = [teacher.run(t_in[i], [target])[target] for i in range(len(data))]

            def loss_of(i: int, final=final, target=target, want=want):
                def f(ws):
                    got = student.run(s_in[i], [target], ws)[target]
                    if final:
                        with torch.no_grad():
                            ref = teacher.run(t_in[i], [target])[target]
                        return self._final_loss(got, ref, data[i], lm)
                    return ((got - want[i]) ** 2).mean()

                return f

            def held_loss(loss_of=loss_of) -> float:  # the block's loss on the held-out windows, hard rounding
                student.eval()
                with torch.no_grad():
                    ws = student.weights([w for w in blk.weights if w in student.fq_names])
                    v = float(np.mean([float(loss_of(i)(ws)) for i in held]))
                student.train()
                return v

            held0 = held_loss()
            student.train_weights(blk.weights, _float_weights(teacher_model, model, set(blk.weights)))
            # the frozen quantized weights the block reads (a tied head's table; its own are trainable by now):
            # dequantized once per step
            fixed = [w for w in student.reads(s_in[0], [target]) if w in student.deferred]
            opt = self._optimizer(student, blk.weights)
            first = last = float("nan")
            for step, idx in enumerate(self._batches(train, self.steps)):
                last = self._step(opt, student, blk.weights, [loss_of(int(i)) for i in idx], step, fixed)
                first = last if step == 0 else first
                bar.update()
                bar.set_postfix(block=f"{b + 1}/{len(blocks)}", loss=f"{last:.4g}")
            held1 = held_loss()
            kept = held1 < held0
            if kept:
                student.write_back(blk.weights)
            # else: training did not help this block where it counts, and the quantizer's weights stay
            student.freeze(blk.weights)
            del opt
            trim_heap()  # the block's training state: freed, and handed back before the next block
            losses[f"block{b}"] = {
                "first": first,
                "last": last,
                "held_before": held0,
                "held_after": held1,
                "kept": "trained" if kept else "quantizer",
            }
            if final:
                break
            with torch.no_grad():  # the block's outputs as written (the model's weights now) feed the next block
                for i in range(len(data)):
                    s_out = student.run(s_in[i], [target])[target]
                    assert want is not None
                    t_in[i] = {**data[i], target: want[i]}
                    s_in[i] = {**data[i], target: s_out}
        bar.close()
        return blocks, losses


@dataclasses.dataclass
class Block:
    """The trainable weights a span of the graph reads, and the one activation depending on a trainable weight
    that later nodes read from the span (``output``; "" for the last block, which runs to the graph's end)."""

    weights: list[str]
    output: str


def split_blocks(model: Model, trainable: set[str]) -> list[Block]:
    """Cut the graph (in node order) after every node where exactly one activation that depends on a trainable
    weight is still read later (a residual stream between transformer blocks); merge the spans so every block
    reads at least one trainable weight. The last block runs to the graph's end."""
    nodes = list(model.graph)
    outputs = {v.name for v in model.graph.outputs}
    last_use: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for i in n.inputs:
            if i is not None and not i.is_const:
                last_use[i.name] = k
    dynamic: set[str] = set()
    for n in nodes:
        if any(i is not None and (i.name in trainable or i.name in dynamic) for i in n.inputs):
            dynamic.update(o.name for o in n.outputs if o is not None)
    blocks: list[Block] = []
    weights: list[str] = []  # the current span's, in first-read order
    live: set[str] = set()  # produced, still read later
    for k, n in enumerate(nodes):
        weights += [i.name for i in n.inputs if i is not None and i.name in trainable and i.name not in weights]
        live |= {o.name for o in n.outputs if o is not None}
        live = {v for v in live if last_use.get(v, -1) > k or v in outputs}
        dyn = [v for v in live if v in dynamic]
        if weights and len(dyn) == 1 and dyn[0] not in outputs and k < len(nodes) - 1:
            blocks.append(Block(weights, dyn[0]))
            weights = []
    if weights or not blocks:
        blocks.append(Block(weights, ""))
    else:  # nothing trainable after the last cut: the last block runs to the end
        blocks[-1] = Block(blocks[-1].weights, "")
    return blocks


class _Judge:
    """The pass's property checks (``checks=``) against the float model: output checks on ``holdout``
    calibration samples (their float outputs computed once), model checks (generation) prepared on it once."""

    def __init__(self, qat: QAT, teacher: Model, ctx: PassContext):
        from ...checks import outputs_on, parse_checks

        self.checks = parse_checks(qat.checks, ctx.checks)
        assert ctx.calibration is not None  # run() refused a pipeline without
        data = list(ctx.calibration.samples)
        rest = data[qat.samples :] if qat.samples else []
        self.held = rest[: max(qat.holdout, 1)] if rest else data[-max(qat.holdout, 1) :]
        self.names = [o.name for o in teacher.graph.outputs]
        self.ref: list[list[np.ndarray]] = []
        if any(not c.needs_model for c in self.checks):
            self.ref = outputs_on(teacher, self.held, self.names)
        for c in self.checks:
            if c.needs_model:
                c.prepare(teacher)

    def __call__(self, model: Model) -> dict[str, dict[str, Any]]:
        from ...checks import outputs_on

        got: list[list[np.ndarray]] = []
        if self.ref:
            got = outputs_on(model, self.held, self.names)
        out = {}
        for c in self.checks:
            r = c.judge(model, self.ref, got)
            out[c.describe()] = {"passed": r.passed, "value": r.value, "detail": r.detail}
        return out


def _is_lm(model: Model) -> bool:
    from ...api.llm import LLMConfig

    return LLMConfig.from_model(model) is not None


def _windows(model: Model, ctx: PassContext, seq: int, samples: int) -> list[dict[str, np.ndarray]]:
    """The calibration samples (a language model's cut to ``seq`` tokens), at most ``samples`` of them."""
    from ...api.llm import first_tokens

    data = list(ctx.calibration.samples)
    data = first_tokens(model, data[:samples] if samples else data, seq)
    shapes = {tuple((k, np.shape(a)) for k, a in sorted(s.items())) for s in data}
    if len(shapes) > 1:
        raise UsageError(
            "qat batches calibration samples together, and these differ in shape "
            f"({len(shapes)} shapes); give samples of one shape (a text file is cut into equal windows)"
        )
    return data


def _float_weights(teacher: Model, student: Model, names: set[str]) -> dict[str, np.ndarray]:
    """The float originals of the quantized weights ``names``: the teacher's value at the same node and input (a
    quantizer renames the constants it replaces)."""
    out: dict[str, np.ndarray] = {}
    for nt, ns in zip(teacher.graph, student.graph):
        for vt, vs in zip(nt.inputs, ns.inputs):
            if vs is not None and vt is not None and vs.name in names and vs.name not in out and vt.is_const:
                out[vs.name] = np.asarray(vt.numpy())
    return out


def _tables(model: Model) -> set[str]:
    """Constant tables a Gather reads rows of (token embeddings; a tied head reads the same one)."""
    return {
        n.inputs[0].name
        for n in model.graph
        if n.op_type == "Gather" and n.domain in ("", "ai.onnx") and n.inputs[0] is not None and n.inputs[0].is_const
    }


def _same_structure(a: Model, b: Model) -> None:
    na, nb = list(a.graph), list(b.graph)
    if [(n.name, n.op_type) for n in na] != [(n.name, n.op_type) for n in nb]:
        raise EdgecError(
            "qat: the quantized model's graph differs from the float model's (a pass between the quantizer and "
            "qat changed its structure); put qat right after the quantizer"
        )
