"""How kind=cluster turns documents into vectors and names clusters (scikit-learn, transformers), and
fits and applies k-means (faiss). Imported by jobs/kinds/cluster.py inside run(), in the stage's
environment.

  fit_embedder    on the fit stage's sample: TfidfVectorizer (sublinear tf, English stop words) and,
                  for embedding=tfidf, TruncatedSVD to `dims` components (LSA); a dict that pickles
  embed_with      the fitted embedder on any texts (an assign task's shard): dense n x d float32
                  embeddings and the sparse n x V TF-IDF rows (they name the clusters)
  model_vectors   transformers AutoModel on a local folder, mean of the last hidden states over the
                  attention mask: dense n x hidden, float32 (CPU; the first max_length tokens)
  kmeans          faiss.Kmeans, spherical (cosine), on the L2-normalised sample: centroids k x d
  assign          each row's nearest centroid by cosine (faiss.IndexFlatIP on the centroids)
  term_sums       per cluster, the sum of its documents' TF-IDF rows (sparse k x V; shards add up)
  top_terms       per cluster, the terms with the highest mean TF-IDF weight (from those sums)"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple


def load_libraries(model: bool) -> None:
    """Import what the steps use now (seconds of scipy/sklearn/faiss/torch imports on a busy node), so
    the steps' timings in result.json measure the work, as a direct script that imports first does."""
    import importlib

    for name in ("sklearn.feature_extraction.text", "sklearn.decomposition", "faiss",
                 *(("torch", "transformers") if model else ())):
        importlib.import_module(name)


def fit_embedder(texts: Sequence[str], embedding: Any, max_features: int, dims: int, seed: int) -> Dict[str, Any]:
    """The embedder fitted on `texts` (the sample): {"tfidf": TfidfVectorizer, "svd": TruncatedSVD or
    None, "model": {model, batch_size, max_length} or None}. SVD dims are cut to what the sample's
    matrix allows (min(n, V) - 1). A model embedding has nothing to fit; TF-IDF still names clusters."""
    import numpy as np
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=max_features, sublinear_tf=True, stop_words="english",
                          token_pattern=r"(?u)\b[^\W\d_]{2,}\b", dtype=np.float32)
    x = vec.fit_transform(texts)
    svd = None
    if embedding == "tfidf":
        svd = TruncatedSVD(n_components=max(1, min(dims, min(x.shape) - 1)), random_state=seed).fit(x)
    model = None if embedding == "tfidf" else {"model": embedding["model"],
                                               "batch_size": embedding.get("batch_size", 32),
                                               "max_length": embedding.get("max_length", 256)}
    return {"tfidf": vec, "svd": svd, "model": model}


def embed_with(embedder: Dict[str, Any], texts: Sequence[str]) -> Tuple[Any, Any]:
    """(embeddings n x d float32, TF-IDF rows n x V sparse) of texts by a fitted embedder. Each row
    depends on its own text only, so a shard's rows equal the same documents' rows embedded all at once."""
    x = embedder["tfidf"].transform(texts)
    if embedder["svd"] is not None:
        return embedder["svd"].transform(x).astype("float32"), x
    m = embedder["model"]
    return model_vectors(texts, m["model"], m["batch_size"], m["max_length"]), x


def model_vectors(texts: Sequence[str], model: str, batch_size: int = 32, max_length: int = 256):
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    if tok.pad_token is None:  # causal LMs (the demo's) have none: pad with EOS, masked out anyway
        tok.pad_token = tok.eos_token or tok.unk_token
    net = AutoModel.from_pretrained(model).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
            hidden = net(**batch).last_hidden_state  # b x t x h
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy())
    return np.concatenate(out).astype("float32")


def kmeans(emb, k: int, seed: int, niter: int = 25, nredo: int = 4) -> Tuple[Any, Dict[str, Any]]:
    """(centroids k x d float32 of unit norm, facts): faiss.Kmeans, spherical, on the L2-normalised rows
    of emb (the fit stage's sample), seeded, the best of `nredo` runs. faiss subsamples to
    max_points_per_centroid * k points by default: raised to len(emb), so cluster.sample alone decides."""
    import faiss
    import numpy as np

    from jobs.runtime.semdedup import normalized

    x = np.ascontiguousarray(normalized(emb))
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=max(len(x), 1))
    km.train(x)
    return km.centroids.copy(), {"fitted_on": int(len(x)), "iterations": niter, "nredo": nredo,
                                 "objective": float(km.obj[-1]) if len(km.obj) else None}


def assign(emb, centroids) -> Tuple[Any, Any]:
    """(labels n int32, cosine similarity to that centroid n float32): the nearest centroid by inner
    product on L2-normalised rows, which is cosine (the centroids are unit norm: spherical k-means)."""
    import faiss
    import numpy as np

    from jobs.runtime.semdedup import normalized

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sims, labels = index.search(np.ascontiguousarray(normalized(emb)), 1)
    return labels[:, 0].astype(np.int32), sims[:, 0].astype(np.float32)


def term_sums(x, labels, k: int):
    """Sparse k x V: row c is the sum of the TF-IDF rows of the documents labelled c."""
    import numpy as np
    from scipy import sparse

    n = x.shape[0]
    onehot = sparse.csr_matrix((np.ones(n, dtype=np.float32), (np.asarray(labels), np.arange(n))), shape=(k, n))
    return (onehot @ x).tocsr()


def top_terms(sums, sizes, terms: List[str], n: int) -> List[List[str]]:
    """The n terms of highest mean TF-IDF weight in each cluster, from term_sums (added over shards) and
    the cluster sizes."""
    import numpy as np

    out = []
    for c, size in enumerate(sizes):
        if not size or n == 0:
            out.append([])
            continue
        mean = np.asarray(sums[c].todense()).ravel() / size
        out.append([terms[i] for i in np.argsort(-mean, kind="stable")[:n] if mean[i] > 0])
    return out


def map_2d(emb, seed: int):
    """2-D coordinates for the topic map: the first two principal components."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(emb)
