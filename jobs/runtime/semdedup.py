"""SemDeDup's rule (Abbas et al. 2023, "SemDeDup: data-efficient learning at web-scale through semantic
deduplication"; D4 uses the same step): within each k-means cluster, a document whose cosine similarity
to a document already kept is above a threshold is removed. numpy only, imported inside the functions
(the login node imports this module's name, never numpy).

Order: documents of a cluster are visited in input order; the first of a group of near-duplicates is
kept. A document is compared with the kept documents only: in a chain a ~ b ~ c where a and c are not
similar, b is removed (similar to a) and c is kept (its only similar document, b, was removed). A group
of siblings (two copies of one original) keeps the original and removes both copies.

Cost: one cluster's similarity block at a time, in rows of `block` documents: O(n_c * kept_c) dot products
and block * n_c floats of memory per cluster."""
from __future__ import annotations

from typing import Any, List, Tuple


def normalized(emb) -> Any:
    """Rows scaled to unit L2 norm (a zero row stays zero): dot products are then cosine similarities."""
    import numpy as np

    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1, norms)


def semdedup(emb, labels, threshold: float, block: int = 1024) -> Tuple[Any, Any, Any]:
    """(keep, dup_of, similarity) for documents with embeddings emb (n x d, any norm) and cluster labels
    (n ints). keep: bool array (n); dup_of: for a removed document the index of the kept document it is
    most similar to, -1 for a kept one; similarity: that cosine similarity (float32, 0 for kept ones).
    A document is removed when its similarity to some kept document of its cluster is > threshold."""
    import numpy as np

    x = normalized(emb)
    labels = np.asarray(labels)
    n = len(x)
    keep = np.ones(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    sim = np.zeros(n, dtype=np.float32)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)  # input order
        xc = x[members]
        kept = np.empty(len(members), dtype=np.int64)  # positions within the cluster, kept[:nk] filled
        nk = 0
        for start in range(0, len(members), block):
            rows = xc[start:start + block] @ xc.T  # similarities of this block to the whole cluster
            for r in range(rows.shape[0]):
                i = start + r
                if nk:
                    s = rows[r, kept[:nk]]
                    j = int(np.argmax(s))
                    if s[j] > threshold:
                        keep[members[i]] = False
                        dup_of[members[i]] = members[kept[j]]
                        sim[members[i]] = s[j]
                        continue
                kept[nk] = i
                nk += 1
    return keep, dup_of, sim


def groups(dup_of) -> List[List[int]]:
    """Removed documents grouped under the kept one they duplicate: [[kept, removed, ...], ...]."""
    out: dict = {}
    for i, j in enumerate(dup_of):
        if j >= 0:
            out.setdefault(int(j), [int(j)]).append(i)
    return list(out.values())
