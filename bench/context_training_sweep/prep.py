"""Token data for the context-training sweep (sweep.py), built with the package's own corpus, tokenizer and
context builder exactly as `make code-lm` builds them: the plain training stream, the held-out stream, the context
training prompts (both orders, dev split of the training projects), and (full prompt, prompt without chunks, target
range) pairs of the held-out training projects and of the local evaluation dataset (data/processed/context_local,
test split in both orders; 120 dev samples). Needs `make code-lm-plain dataset` first.

    PYTHONPATH=lib .venv/bin/python bench/context_training_sweep/prep.py   # -> data/interim/context_sweep.safetensors
"""
import os

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from deltalens.codelm.context_data import build_training_contexts, context_sequences
from deltalens.codelm.corpus import build_corpus, excluded_names
from deltalens.codelm.params import load_params
from deltalens.codelm.tokenizer import encode_documents
from deltalens.codelm.train import token_stream
from deltalens.context.schema import load
from deltalens.lm.prompts import LayoutPolicy, encode_variants

p = load_params("params/codelm/default.yaml")
tok = AutoTokenizer.from_pretrained("data/models/code-lm-plain")
corpus = build_corpus(p.corpus)
eos = tok.convert_tokens_to_ids("<|endoftext|>")
train = token_stream(encode_documents(tok, corpus.texts("train")), eos)
held = token_stream(encode_documents(tok, corpus.texts("held_out")), eos)
ds = build_training_contexts(p.context, excluded_names(p.corpus), p.seed)
out = {"train_stream": train.to(torch.int32), "held_stream": held.to(torch.int32)}

def pack(name, seqs):
    out[name + "_flat"] = torch.cat(seqs).to(torch.int32)
    out[name + "_len"] = torch.tensor([len(s) for s in seqs], dtype=torch.int32)

seqs, skipped, starts = context_sequences(ds, tok, p.context, 1025, split="dev")
pack("ctx", seqs)
out["ctx_prefix_start"] = torch.tensor(
    context_sequences(ds, tok, type(p.context)(**{**p.context.__dict__, "loss": "query"}), 1025, split="dev")[2], dtype=torch.int32)

def eval_pairs(name, dset, split, order, ids_limit=None):
    full_s, none_s, tf, tn = [], [], [], []
    ids = list(dset.samples.loc[dset.samples["split"] == split, "sample_id"])[:ids_limit]
    pol = LayoutPolicy(order, 400, 1024, "drop_chunks")
    for sid in ids:
        s = dset.sample(sid)
        try:
            f, n, _ = encode_variants(tok, s, pol)
        except Exception as e:
            print("skip", sid, e); continue
        full_s.append(f.input_ids[0]); none_s.append(n.input_ids[0]); tf.append(f.target_tokens); tn.append(n.target_tokens)
    pack(name + "_full", full_s); pack(name + "_none", none_s)
    out[name + "_tfull"] = torch.tensor(tf, dtype=torch.int32); out[name + "_tnone"] = torch.tensor(tn, dtype=torch.int32)
    print(name, len(full_s))

eval_pairs("heldctx", ds, "test", "context_first", 96)
ev = load("data/processed/context_local")
eval_pairs("evalcf", ev, "test", "context_first")
eval_pairs("evalqf", ev, "test", "query_first")
eval_pairs("devcf", ev, "dev", "context_first", 120)
save_file(out, os.environ.get("SWEEP_DATA", "data/interim/context_sweep.safetensors"))
print({k: tuple(v.shape) for k, v in out.items()})
