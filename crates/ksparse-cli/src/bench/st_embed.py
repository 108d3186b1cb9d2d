# Baseline for `ksparse bench embed`: the same texts through sentence-transformers.
# argv: model_dir texts.json batch_size threads out.npy; prints one JSON line.
import json, sys, time

model_dir, texts_path, batch_size, threads, out_path = sys.argv[1:6]
import numpy as np
import torch
torch.set_num_threads(int(threads))
from sentence_transformers import SentenceTransformer

texts = json.load(open(texts_path))
model = SentenceTransformer(model_dir, device="cpu")
model.encode(texts[: int(batch_size)], batch_size=int(batch_size))  # warm-up
start = time.perf_counter()
vectors = model.encode(texts, batch_size=int(batch_size), normalize_embeddings=False, convert_to_numpy=True)
seconds = time.perf_counter() - start
np.save(out_path, vectors.astype(np.float32))
print(json.dumps({"seconds": seconds, "torch": torch.__version__, "threads": torch.get_num_threads()}))
