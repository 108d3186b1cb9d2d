# Baselines for `ksparse bench search`: the engines users run today, on the same vectors and
# codes, timed the way ksparse is (latency: one query at a time on one thread; QPS: all
# queries on all threads where the engine can use them).
#
# argv: DIR THREADS TOP HNSW_M HNSW_EF_CONSTRUCTION HNSW_EF K[,K...]
# DIR holds docs.npy and queries.npy (dense, float32) and, per k, docs-k{k}.npz and
# queries-k{k}.npz (SciPy CSR members, read with NumPy alone). Prints one JSON line: a list
# of rows {engine, k, p50_ms, p99_ms, qps, bytes, build_s, hits} or {engine, k, skipped}.
import json, os, sys, time

import numpy as np

folder = sys.argv[1]
threads, top, hnsw_m, hnsw_efc, hnsw_ef = map(int, sys.argv[2:7])
ks = [int(k) for k in sys.argv[7].split(",") if k]
docs = np.load(os.path.join(folder, "docs.npy"))
queries = np.load(os.path.join(folder, "queries.npy"))
rows = []


def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentiles(ms):
    ms = sorted(ms)
    pick = lambda p: ms[int(round((len(ms) - 1) * p))]
    return pick(0.5), pick(0.99)


def timed_rows(engine, k, one, batch, bytes_, build_s):
    """one(i) -> top ids of query i on this thread; batch() -> None, all queries."""
    hits, ms = [], []
    for i in range(len(queries)):
        t = time.perf_counter()
        hits.append([int(h) for h in one(i)])
        ms.append((time.perf_counter() - t) * 1e3)
    rounds = max(1, 2000 // len(queries))
    t = time.perf_counter()
    for _ in range(rounds):
        batch()
    qps = rounds * len(queries) / (time.perf_counter() - t)
    p50, p99 = percentiles(ms)
    rows.append(dict(engine=engine, k=k, p50_ms=p50, p99_ms=p99, qps=qps,
                     bytes=int(bytes_), build_s=build_s, hits=hits))


def skipped(engine, k, why):
    rows.append(dict(engine=engine, k=k, skipped=why))


def load_csr(name):
    z = np.load(os.path.join(folder, name))
    return z["indptr"].astype(np.int64), z["indices"].astype(np.int64), z["data"].astype(np.float32), tuple(z["shape"])


try:
    import faiss
except ImportError:
    skipped("faiss-flat", None, "faiss is not installed")
else:
    index = faiss.IndexFlatIP(docs.shape[1])
    t = time.perf_counter()
    index.add(docs)
    build_s = time.perf_counter() - t

    def one(i):
        faiss.omp_set_num_threads(1)
        return index.search(queries[i:i + 1], top)[1][0]

    def batch():
        faiss.omp_set_num_threads(threads)
        index.search(queries, top)

    timed_rows("faiss-flat", None, one, batch, docs.nbytes, build_s)
    del index

try:
    import hnswlib
except ImportError:
    skipped("hnswlib", None, "hnswlib is not installed")
else:
    before = resident()
    t = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=docs.shape[1])
    index.init_index(max_elements=len(docs), ef_construction=hnsw_efc, M=hnsw_m, random_seed=0)
    index.add_items(docs, np.arange(len(docs)), num_threads=threads)
    index.set_ef(hnsw_ef)
    build_s = time.perf_counter() - t
    grown = resident() - before
    timed_rows("hnswlib", None,
               lambda i: index.knn_query(queries[i:i + 1], k=top, num_threads=1)[0][0],
               lambda: index.knn_query(queries, k=top, num_threads=threads),
               grown, build_s)
    del index

try:
    import seismic
except ImportError:
    seismic = None
try:
    import scipy.sparse
except ImportError:
    scipy = None

for k in ks:
    d_ptr, d_ids, d_val, d_shape = load_csr(f"docs-k{k}.npz")
    q_ptr, q_ids, q_val, _ = load_csr(f"queries-k{k}.npz")
    q_terms = [(q_ids[q_ptr[i]:q_ptr[i + 1]], q_val[q_ptr[i]:q_ptr[i + 1]]) for i in range(len(q_ptr) - 1)]
    if seismic is None:
        skipped("seismic", k, "pyseismic-lsr is not installed")
    else:
        string = seismic.get_seismic_string()
        before = resident()
        t = time.perf_counter()
        dataset = seismic.SeismicDataset()
        dataset.add_documents_by_id([str(i) for i in range(d_shape[0])], d_ids, d_val, d_ptr)
        index = seismic.SeismicIndex.build_from_dataset(dataset, num_threads=threads)
        build_s = time.perf_counter() - t
        grown = resident() - before
        comps = [np.array([str(j) for j in ids], dtype=string) for ids, _ in q_terms]
        vals = [v for _, v in q_terms]
        names = np.array([str(i) for i in range(len(q_terms))], dtype=string)
        cut, heap = k, 0.8

        def one(i):
            found = index.search(str(i), comps[i], vals[i], top, cut, heap)
            return [int(doc) for _, _, doc in found]

        timed_rows("seismic", k, one,
                   lambda: index.batch_search(names, comps, vals, top, cut, heap, num_threads=threads),
                   grown, build_s)
        del index, dataset
    if scipy is None:
        skipped("scipy-csr", k, "scipy is not installed")
    else:
        t = time.perf_counter()
        matrix = scipy.sparse.csr_matrix((d_val, d_ids, d_ptr), shape=d_shape)
        build_s = time.perf_counter() - t
        dense_q = np.zeros((len(q_terms), d_shape[1]), dtype=np.float32)
        for i, (ids, v) in enumerate(q_terms):
            dense_q[i, ids] = v

        def one(i):
            scores = matrix @ dense_q[i]
            best = np.argpartition(-scores, top)[:top]
            return best[np.lexsort((best, -scores[best]))]

        def batch():
            # SciPy's sparse product runs on one thread.
            scores = matrix @ dense_q.T
            np.argpartition(-scores, top, axis=0)

        timed_rows("scipy-csr", k, one, batch, matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes, build_s)
        del matrix

print(json.dumps(rows))
