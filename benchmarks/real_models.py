"""The real-model matrix: transformers architectures, exported as users export them, compiled for every target.

Each architecture is built offline from its transformers config class (small sizes, random seeded weights: these
models exercise the importer and the targets, not accuracy) and exported every way a user would:

* ``ts13`` / ``ts14`` / ``ts17``: torch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``) at
  opsets 13, 14 and 17;
* ``dyn18``: the dynamo exporter (``dynamo=True``) at opset 18;
* ``pt2``: ``torch.export.export`` + ``torch.export.save``;

for attention models with ``attn_implementation`` ``eager`` and ``sdpa`` (``*-eager`` / ``*-sdpa``). Every
export is compiled for every target with ``--verify`` (``edgec compile ... --verify --json``, one process per
compile with a timeout). A cell is ``ok`` when the compile succeeded and verification passed; otherwise it holds
the error's first line.

    python benchmarks/real_models.py [--models bert,vit,...] [--exports ts17-sdpa,dyn18-sdpa,...]
                                     [--targets cpu,openvino,...] [--timeout 600] [--json FILE] [--no-write]

The slow-marked test ``tests/test_real_models.py`` runs a representative subset of the same cells.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]  # benchmarks/openvino.py

SEQ, IMG = 16, 32
TARGETS = ("cpu", "openvino", "tensorrt{precision=fp32}", "coreml", "hexagon")
EXPORTS = ("ts13", "ts14", "ts17", "dyn18", "pt2")


# ------------------------------------------------------------------------------------------------ models
def _text(cfg_cls, model_cls, **kw):
    def build(attn):
        import transformers as tf

        cfg = getattr(tf, cfg_cls)(**kw)
        return getattr(tf, model_cls)._from_config(cfg, attn_implementation=attn), "text"

    return build


def _vision(cfg_cls, model_cls, **kw):
    def build(attn):
        import transformers as tf

        cfg = getattr(tf, cfg_cls)(**kw)
        extra = {"attn_implementation": attn} if attn else {}
        return getattr(tf, model_cls)._from_config(cfg, **extra), "image"

    return build


def _whisper(attn):
    import transformers as tf

    cfg = tf.WhisperConfig(
        vocab_size=100,
        num_mel_bins=16,
        encoder_layers=2,
        encoder_attention_heads=2,
        decoder_layers=1,
        decoder_attention_heads=2,
        d_model=32,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=SEQ,
        max_target_positions=SEQ,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return tf.WhisperModel._from_config(cfg, attn_implementation=attn).get_encoder(), "mel"


def _wav2vec2(attn):
    import transformers as tf

    cfg = tf.Wav2Vec2Config(
        vocab_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=False,
    )
    return tf.Wav2Vec2Model._from_config(cfg, attn_implementation=attn), "audio"


def _encoder_of(cfg_cls, model_cls, **kw):
    def build(attn):
        import transformers as tf

        cfg = getattr(tf, cfg_cls)(**kw)
        return getattr(tf, model_cls)._from_config(cfg, attn_implementation=attn).get_encoder(), "text"

    return build


_T = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)
MODELS = {
    "bert": (_text("BertConfig", "BertModel", **_T), True),
    "distilbert": (
        _text(
            "DistilBertConfig",
            "DistilBertModel",
            vocab_size=100,
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=64,
        ),
        True,
    ),
    "roberta": (_text("RobertaConfig", "RobertaModel", **_T), True),
    "albert": (_text("AlbertConfig", "AlbertModel", embedding_size=16, **_T), True),
    "electra": (_text("ElectraConfig", "ElectraModel", embedding_size=16, **_T), True),
    "gpt2": (_text("GPT2Config", "GPT2Model", vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64), True),
    "llama": (_text("LlamaConfig", "LlamaModel", num_key_value_heads=1, **_T), True),
    "qwen2": (_text("Qwen2Config", "Qwen2Model", num_key_value_heads=1, **_T), True),
    "t5-encoder": (
        _text("T5Config", "T5EncoderModel", vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2),
        True,
    ),
    "bart-encoder": (
        _encoder_of(
            "BartConfig",
            "BartModel",
            vocab_size=100,
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
        ),
        True,
    ),
    "vit": (
        _vision(
            "ViTConfig",
            "ViTModel",
            image_size=IMG,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        True,
    ),
    "deit": (
        _vision(
            "DeiTConfig",
            "DeiTModel",
            image_size=IMG,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        True,
    ),
    "swin": (
        _vision(
            "SwinConfig",
            "SwinModel",
            image_size=IMG,
            patch_size=4,
            embed_dim=16,
            depths=[1, 1],
            num_heads=[2, 2],
            window_size=4,
        ),
        True,
    ),
    "convnext": (_vision("ConvNextConfig", "ConvNextModel", num_stages=2, hidden_sizes=[16, 32], depths=[1, 1]), False),
    "resnet": (
        _vision(
            "ResNetConfig", "ResNetModel", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"
        ),
        False,
    ),
    "mobilenetv2": (_vision("MobileNetV2Config", "MobileNetV2Model", image_size=IMG, depth_multiplier=0.25), False),
    "efficientnet": (
        _vision(
            "EfficientNetConfig",
            "EfficientNetModel",
            image_size=IMG,
            width_coefficient=0.25,
            depth_coefficient=0.25,
            hidden_dim=320,
        ),
        False,
    ),
    "whisper-encoder": (_whisper, True),
    "wav2vec2": (_wav2vec2, True),
    "clip-text": (
        _text(
            "CLIPTextConfig",
            "CLIPTextModel",
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        True,
    ),
    "clip-vision": (
        _vision(
            "CLIPVisionConfig",
            "CLIPVisionModel",
            image_size=IMG,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        True,
    ),
}


class FirstOutput:
    """Wraps a transformers model so that it returns one tensor (the first of its outputs)."""

    def __new__(cls, model, kind):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, *args):
                if kind == "text" and len(args) == 2:
                    out = self.m(input_ids=args[0], attention_mask=args[1])
                elif kind == "text":
                    out = self.m(input_ids=args[0])
                elif kind == "image":
                    out = self.m(pixel_values=args[0])
                elif kind == "mel":
                    out = self.m(input_features=args[0])
                else:
                    out = self.m(input_values=args[0])
                return out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))

        return Wrapped().eval()


def example_inputs(kind: str, model) -> tuple[tuple, list[str]]:
    import torch

    g = torch.Generator().manual_seed(0)
    if kind == "text":
        ids = torch.randint(0, 100, (1, SEQ), generator=g)
        mask = torch.ones(1, SEQ, dtype=torch.int64)
        mask[0, -3:] = 0  # padding: the mask path is exercised
        return (ids, mask), ["input_ids", "attention_mask"]
    if kind == "image":
        return (torch.randn(1, 3, IMG, IMG, generator=g),), ["pixel_values"]
    if kind == "mel":
        return (torch.randn(1, model.config.num_mel_bins, 2 * SEQ, generator=g),), ["input_features"]
    return (torch.randn(1, 800, generator=g),), ["input_values"]


def build(name: str, attn: str | None):
    import torch

    torch.manual_seed(0)
    fn, _ = MODELS[name]
    model, kind = fn(attn)
    wrapped = FirstOutput(model.eval(), kind)
    args, names = example_inputs(kind, model)
    return wrapped, args, names


def export(name: str, how: str, folder: str) -> str:
    """Export ``name`` as ``how`` (e.g. ``ts17-sdpa``, ``dyn18-eager``, ``pt2-sdpa``, ``ts17`` for models without
    attention); returns the file."""
    import torch

    kind, _, attn = how.partition("-")
    model, args, names = build(name, attn or None)
    with torch.no_grad():
        model(*args)
    os.makedirs(folder, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "pt2":
            path = os.path.join(folder, f"{name}-{how}.pt2")
            torch.export.save(torch.export.export(model, args), path)
        else:
            path = os.path.join(folder, f"{name}-{how}.onnx")
            dynamo = kind.startswith("dyn")
            torch.onnx.export(
                model,
                args,
                path,
                dynamo=dynamo,
                opset_version=int(kind[-2:]),
                input_names=names,
                output_names=["out"],
                **({"external_data": False} if dynamo else {}),
            )
    return path


def compile_cell(path: str, target: str, out: str, timeout: float) -> tuple[str, float]:
    t0 = time.time()
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgec.cli",
                "compile",
                path,
                "--target",
                target,
                "-o",
                out,
                "--verify",
                "--json",
                "--no-cache",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout:.0f} s", time.time() - t0
    dt = time.time() - t0
    if r.returncode == 0:
        try:
            v = json.loads(r.stdout)["manifest"]["verification"]
        except (ValueError, KeyError):
            return "no JSON result", dt
        return ("ok" if v.get("passed") and v.get("ran") else f"verification: {v.get('summary', '?')}"), dt
    try:  # --json reports the error on stdout
        msg = json.loads(r.stdout)["error"]["message"].replace("\n", " / ")
    except (ValueError, KeyError, TypeError):
        err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("[", "Running MIL"))]
        msg = " / ".join(err[-3:]) if err else "no message"
    return f"exit {r.returncode}: {msg[:400]}", dt


def exports_for(name: str, wanted: list[str] | None) -> list[str]:
    attn = MODELS[name][1]
    all_ = [f"{e}-{a}" for e in EXPORTS for a in ("eager", "sdpa")] if attn else list(EXPORTS)
    if wanted is None:
        return all_
    out = []
    for w in wanted:
        if w in all_:
            out.append(w)
        elif not attn and w.split("-")[0] in all_ and w.split("-")[0] not in out:
            out.append(w.split("-")[0])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--exports", default=None, help="e.g. ts17-sdpa,dyn18-eager,pt2-sdpa (default: all)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per compile")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--merge",
        default=None,
        help="a --json file of an earlier run whose cells (other targets or "
        "exports) join this run's table; this run's cells win",
    )
    args = ap.parse_args(argv)
    import re

    targets = [t for t in re.split(r",(?![^{]*\})", args.targets) if t]
    wanted = args.exports.split(",") if args.exports else None
    results: dict[str, dict[str, dict[str, str]]] = {}
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="edgec-real-") as tmp:
        for name in args.models.split(","):
            for how in exports_for(name, wanted):
                cell = results.setdefault(name, {}).setdefault(how, {})
                try:
                    path = export(name, how, os.path.join(tmp, "models"))
                except Exception as e:  # noqa: BLE001 - the exporter's own failure: recorded, not ours
                    for t in targets:
                        cell[t] = f"export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    print(f"{name} {how}: export failed: {e!s:.200}", flush=True)
                    continue
                for t in targets:
                    res, dt = compile_cell(path, t, os.path.join(tmp, "out", f"{name}-{how}-{t}"), args.timeout)
                    cell[t] = res
                    print(f"{name:16s} {how:12s} {t:26s} {dt:6.1f}s {res[:160]}", flush=True)
    seconds = time.time() - t_start
    if args.merge:
        with open(args.merge) as f:
            old = json.load(f)
        for name, exps in old.items():
            for how, cell in exps.items():
                for t, res in cell.items():
                    results.setdefault(name, {}).setdefault(how, {}).setdefault(t, res)
                    if t not in targets:
                        targets.append(t)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    lines = report(results, targets, seconds, args)
    if args.no_write:
        print("\n".join(lines))
    else:
        sys.path.insert(0, HERE)
        from _results import write_results

        write_results("RESULTS-real-models.md", lines)


def report(results, targets, seconds, args) -> list[str]:
    import torch
    import transformers

    lines = [
        "## Real-model matrix: transformers architectures exported by users' exporters, on every target",
        "",
        f"transformers {transformers.__version__}, torch {torch.__version__}; random seeded weights, small "
        f"configs; sequence {SEQ}, images {IMG}x{IMG}. Each cell: `edgec compile FILE --target T --verify` "
        f"(ok = compiled and verified). Written by `python benchmarks/real_models.py "
        f"{' '.join(a for a in sys.argv[1:] if a != '--no-write')}` in {seconds / 60:.1f} min"
        + (" (cells of the --merge file come from an earlier run of the same script)" if args.merge else "")
        + ". A blank cell was not run.",
        "",
    ]
    lines.append("| target | ok | failed | rate |")
    lines.append("|---|---:|---:|---:|")
    for t in targets:
        # an export the exporter itself cannot make is no cell of edgec's (it is listed below)
        cells = [c[t] for m in results.values() for c in m.values() if t in c and not c[t].startswith("export failed")]
        ok = sum(c == "ok" for c in cells)
        lines.append(f"| {t} | {ok} | {len(cells) - ok} | {100 * ok / max(1, len(cells)):.0f}% |")
    n_exp = sum(
        1 for m in results.values() for c in m.values() if any(v.startswith("export failed") for v in c.values())
    )
    if n_exp:
        lines += ["", f"{n_exp} exports failed in torch's own exporter (listed under Failures); they are not counted."]
    lines += ["", "| model | export | " + " | ".join(targets) + " |", "|---|---|" + "---|" * len(targets)]
    for name, exps in results.items():
        for how, cell in exps.items():
            lines.append(
                f"| {name} | {how} | "
                + " | ".join(
                    ""
                    if t not in cell
                    else "ok"
                    if cell[t] == "ok"
                    else "export failed"
                    if cell[t].startswith("export failed")
                    else "✗"
                    for t in targets
                )
                + " |"
            )
    fails = [
        (n, h, t, c[t]) for n, e in results.items() for h, c in e.items() for t in targets if c.get(t, "ok") != "ok"
    ]
    if fails:
        lines += ["", "### Failures", "", "| model | export | target | error |", "|---|---|---|---|"]
        for n, h, t, msg in fails:
            lines.append(f"| {n} | {h} | {t} | {msg.replace('|', '/')[:300]} |")
    return lines


if __name__ == "__main__":
    main()
