"""Which training recipe makes the local Mamba code LM read its context, and after how many steps?

A research sweep (not part of `make all`): one recipe per process, the local code LM's architecture (mambapy Mamba,
d_model 256, 4 layers, tied head) initialised from data/models/code-lm-plain (or from scratch), trained on a mixture of
context prompts (the evaluation layout), plain code windows and, as a copying curriculum, *repeated spans* (a code
window, a separator, the same window again: only a model that copies from earlier in its input gains there). At fixed
steps it writes one JSON line with
  - copy: mean loss on the first and the second copy of 8 held-out 256-token windows (no gap = no copying at all);
  - per evaluation set (evalcf / evalqf: local evaluation dataset test split, context / query first; devcf: its dev
    split; heldctx: held-out training projects): the context gain = target-line loss without chunks minus with all
    chunks (nats/token, mean and standard error over samples), greedy exact match with / without.
Run on a GPU by run_gpu.sh (see docs/context_training_sweep/README.md for the measured results).
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from mambapy.mamba import Mamba, MambaConfig, RMSNorm
from safetensors.torch import load_file

ap = argparse.ArgumentParser()
ap.add_argument("--name", required=True); ap.add_argument("--init", default="plain")  # plain | scratch
ap.add_argument("--lr", type=float, default=1e-3); ap.add_argument("--share_ctx", type=float, default=0.6)
ap.add_argument("--share_rep", type=float, default=0.0); ap.add_argument("--loss", default="all")
ap.add_argument("--d_model", type=int, default=256); ap.add_argument("--n_layers", type=int, default=4)
ap.add_argument("--steps", type=int, default=3000); ap.add_argument("--minutes", type=float, default=5.0)
ap.add_argument("--batch", type=int, default=4); ap.add_argument("--warmup", type=int, default=10)
ap.add_argument("--seq", type=int, default=1024); ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
a = ap.parse_args()
dev = torch.device(a.device)
torch.manual_seed(0)
D = load_file(os.environ.get("SWEEP_DATA", "data/interim/context_sweep.safetensors"))
V = 8192
LIM = int(os.environ.get("EVAL_LIMIT", "100000"))

class LM(nn.Module):
    def __init__(s):
        super().__init__()
        s.embedding = nn.Embedding(V, a.d_model)
        s.mamba = Mamba(MambaConfig(d_model=a.d_model, n_layers=a.n_layers, d_state=16, expand_factor=2, d_conv=4,
                                    rms_norm_eps=1e-5, inner_layernorms=False, pscan=True))
        s.norm_f = RMSNorm(a.d_model, 1e-5)
        s.lm_head = nn.Linear(a.d_model, V, bias=False)
        nn.init.normal_(s.embedding.weight, std=0.02)
        s.lm_head.weight = s.embedding.weight
    def forward(s, x):
        return s.lm_head(s.norm_f(s.mamba(s.embedding(x))))

m = LM()
if a.init == "plain":
    sd = load_file("data/models/code-lm-plain/model.safetensors")
    def hk(k):
        if k.startswith("embedding."): return "backbone.embeddings." + k[10:]
        if k.startswith("mamba.layers."): return "backbone.layers." + k[13:]
        if k.startswith("norm_f."): return "backbone." + k
        return k
    own = m.state_dict()
    m.load_state_dict({k: sd.get(hk(k), sd["backbone.embeddings.weight"] if k == "lm_head.weight" else None) for k in own})
m.to(dev)

def unpack(name):
    flat, lens = D[name + "_flat"].long(), D[name + "_len"].tolist()
    out, o = [], 0
    for n in lens:
        out.append(flat[o:o + n]); o += n
    return out

train = D["train_stream"].long(); held = D["held_stream"].long()
ctx = unpack("ctx"); ctx_q = D["ctx_prefix_start"].tolist()
g = torch.Generator().manual_seed(0)

def window(n):
    s = int(torch.randint(0, train.numel() - n - 1, (), generator=g)); return train[s:s + n]

def make_batch():
    seqs, starts = [], []
    for _ in range(a.batch):
        u = float(torch.rand((), generator=g))
        if u < a.share_ctx:
            i = int(torch.randint(len(ctx), (), generator=g)); s = ctx[i][:a.seq + 1]
            seqs.append(s); starts.append(ctx_q[i] if a.loss == "query" else 0)
        elif u < a.share_ctx + a.share_rep:  # a code span, a separator line, the same span again: copying pays
            n = int(torch.randint(64, (a.seq + 1) // 2 - 2, (), generator=g)); w = window(n)
            s = torch.cat([w, train[:1], w])[:a.seq + 1]; seqs.append(s); starts.append(0)
        else:
            seqs.append(window(a.seq + 1)); starts.append(0)
    L = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), L, dtype=torch.long); y = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, (s, st) in enumerate(zip(seqs, starts)):
        x[i, :len(s)] = s; y[i, max(st, 1):len(s)] = s[max(st, 1):]
    return x[:, :-1].to(dev), y[:, 1:].to(dev)

@torch.no_grad()
def target_nll(name):
    full, none = unpack(name + "_full")[:LIM], unpack(name + "_none")[:LIM]
    tf, tn = D[name + "_tfull"].tolist(), D[name + "_tnone"].tolist()
    res = []
    for seqs, ts in ((full, tf), (none, tn)):
        vals = []
        for b in range(0, len(seqs), 16):
            ss = seqs[b:b + 16]; L = max(len(s) for s in ss)
            x = torch.zeros(len(ss), L, dtype=torch.long)
            for i, s in enumerate(ss): x[i, :len(s)] = s
            lp = F.log_softmax(m(x.to(dev)).float(), -1)
            for i, s in enumerate(ss):
                a0, a1 = ts[b + i]
                tgt = s[a0:a1].to(dev)
                nll = -lp[i, a0 - 1:a1 - 1].gather(-1, tgt[:, None])[:, 0]
                em = bool((lp[i, a0 - 1:a1 - 1].argmax(-1) == tgt).all())
                vals.append((float(nll.mean()), em))
        res.append(vals)
    gains = [n[0] - f[0] for f, n in zip(*res)]
    k = len(gains); mu = sum(gains) / k; sd = (sum((x - mu) ** 2 for x in gains) / (k - 1)) ** .5
    return {"gain": mu, "se": sd / k ** .5, "loss_with": sum(f[0] for f in res[0]) / k,
            "em_with": sum(f[1] for f in res[0]) / k, "em_without": sum(n[1] for n in res[1]) / k}

@torch.no_grad()
def copy_diag():
    gg = torch.Generator().manual_seed(1); out = []
    for _ in range(8):
        s = int(torch.randint(0, held.numel() - 300, (), generator=gg)); w = held[s:s + 256]
        x = torch.cat([w, train[:1], w])[None].to(dev)
        lp = F.log_softmax(m(x[:, :-1]).float(), -1)
        nll = -lp[0].gather(-1, x[0, 1:, None])[:, 0]
        out.append((float(nll[:255].mean()), float(nll[257:].mean())))
    return {"first_half": sum(o[0] for o in out) / 8, "second_half": sum(o[1] for o in out) / 8}

def evaluate(step, t):
    m.eval()
    row = {"step": step, "seconds": round(t, 1), "tokens": step * a.batch * a.seq, "copy": copy_diag()}
    for n in ("heldctx", "evalcf", "evalqf", "devcf"):
        row[n] = target_nll(n)
    m.train()
    with open(f"{a.out}/{a.name}.jsonl", "a") as f: f.write(json.dumps(row) + "\n")
    print(a.name, step, f"{t:.0f}s", "copy", {k: round(v, 2) for k, v in row['copy'].items()},
          "gain cf %.3f±%.3f qf %.3f held %.3f em %.2f/%.2f" % (row["evalcf"]["gain"], row["evalcf"]["se"],
          row["evalqf"]["gain"], row["heldctx"]["gain"], row["evalcf"]["em_with"], row["evalcf"]["em_without"]), flush=True)

decay = [p for p in m.parameters() if p.dim() >= 2]; nod = [p for p in m.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nod, "weight_decay": 0}], lr=a.lr, betas=(0.9, 0.95))
with open(f"{a.out}/{a.name}.jsonl", "w") as f: f.write(json.dumps({"args": vars(a)}) + "\n")
evals = {0, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000}
t0 = time.time(); evaluate(0, 0)
for step in range(1, a.steps + 1):
    lr = a.lr * (step / a.warmup if step <= a.warmup else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - a.warmup) / max(1, a.steps - a.warmup))))
    for gr in opt.param_groups: gr["lr"] = lr
    x, y = make_batch()
    loss = F.cross_entropy(m(x).reshape(-1, V), y.reshape(-1), ignore_index=-100)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    if step in evals or step == a.steps:
        evaluate(step, time.time() - t0)
    if time.time() - t0 > 60 * a.minutes:
        evaluate(step, time.time() - t0); break
