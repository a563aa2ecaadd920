"""NumPy reference for benches/knn.rs: exact top-k by cosine and L2 over a memory-mapped .npy.

Usage: /usr/bin/python3 numpy_knn.py EMB.npy QUERIES.npy K REPEATS
Prints a JSON object {case: median milliseconds}. NumPy is held to 2 threads by the caller's env
(OPENBLAS_NUM_THREADS=2).
"""
import json
import sys
import time

import numpy as np


def topk(scores, k, largest):
    s = -scores if largest else scores
    idx = np.argpartition(s, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(s, idx, axis=1).argsort(axis=1)
    return np.take_along_axis(idx, order, axis=1)


def cosine(emb, q, k, chunk=16384):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    best = []
    for a in range(0, emb.shape[0], chunk):
        e = np.asarray(emb[a:a + chunk])
        s = qn @ (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)).T
        best.append((s, a))
    s = np.concatenate([b[0] for b in best], axis=1)
    return topk(s, k, True)


def l2(emb, q, k, chunk=16384):
    parts = []
    qq = (q * q).sum(1)[:, None]
    for a in range(0, emb.shape[0], chunk):
        e = np.asarray(emb[a:a + chunk])
        parts.append(qq - 2 * q @ e.T + (e * e).sum(1)[None, :])
    return topk(np.concatenate(parts, axis=1), k, False)


def main():
    emb = np.load(sys.argv[1], mmap_mode="r")
    queries = np.load(sys.argv[2])
    k, reps = int(sys.argv[3]), int(sys.argv[4])
    out = {}
    for name, fn, nq in [("cosine", cosine, 1), ("cosine", cosine, 64), ("l2", l2, 64)]:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn(emb, queries[:nq], k)
            times.append((time.perf_counter() - t) * 1e3)
        out[f"{name} {nq}q"] = float(np.median(times))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
