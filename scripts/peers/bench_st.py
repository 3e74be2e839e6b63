#!/usr/bin/env python3
"""Peer for bench-embed: sentence-transformers (PyTorch CPU) on the same converted e5 directory,
same texts cut to the same token counts, 2 threads. Prints TSV rows `torch\tmetric\tvalue\tunit`.
pip install torch sentence-transformers"""
import json, os, sys, time
import torch
from sentence_transformers import SentenceTransformer

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
models = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/hotline-triage/models")
texts_path = sys.argv[2] if len(sys.argv) > 2 else "../shared/data/teddycup2020c/dev.jsonl"
texts = [f"{(r.get('title') or '')}\n{r.get('text') or ''}" for r in map(json.loads, open(texts_path, encoding="utf-8"))]
model = SentenceTransformer(f"{models}/multilingual-e5-small", device="cpu")
tok = model.tokenizer
for tokens, count in [(32, 256), (128, 128), (512, 32)]:
    model.max_seq_length = tokens
    batch = [t for t in texts if len(tok("passage: " + t)["input_ids"]) >= tokens][:count]
    batch = ["passage: " + t for t in batch]
    model.encode(batch[:4])
    t = time.time()
    model.encode(batch, batch_size=32)
    seconds = time.time() - t
    # The same BERT encoder FLOP count as bench-embed: 2·L·(4H² + 2HF) + 4·L²·H per layer.
    flops = 12 * (2 * tokens * (4 * 384**2 + 2 * 384 * 1536) + 4 * tokens**2 * 384)
    print(f"torch\ttexts_per_s_{tokens}tok\t{len(batch) / seconds:.2f}\ttexts/s")
    print(f"torch\tgflops_{tokens}tok\t{flops * len(batch) / seconds / 1e9:.2f}\tGFLOP/s")
