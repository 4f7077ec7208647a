"""How kind=cluster turns documents into vectors and names clusters (scikit-learn, transformers), and
fits k-means. Imported by jobs/kinds/cluster.py inside run(), in the stage's environment.

  tfidf_vectors   TfidfVectorizer (sublinear tf, English stop words) -> sparse n x V, and the terms
  svd             TruncatedSVD of those to `dims` components (LSA): dense n x dims, float32
  model_vectors   transformers AutoModel on a local folder, mean of the last hidden states over the
                  attention mask: dense n x hidden, float32 (CPU; the first max_length tokens)
  kmeans          KMeans fitted on a sample (or all), every document assigned: labels (n), centroids
  top_terms       per cluster, the terms with the highest mean TF-IDF weight"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple


def load_libraries(model: bool) -> None:
    """Import what the steps use now (seconds of scipy/sklearn/torch imports on a busy node), so the
    steps' timings in result.json measure the work, as a direct script that imports first does."""
    import importlib

    for name in ("sklearn.feature_extraction.text", "sklearn.decomposition", "sklearn.cluster",
                 *(("torch", "transformers") if model else ())):
        importlib.import_module(name)


def tfidf_vectors(texts: Sequence[str], max_features: int) -> Tuple[Any, List[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=max_features, sublinear_tf=True, stop_words="english",
                          token_pattern=r"(?u)\b[^\W\d_]{2,}\b", dtype=__import__("numpy").float32)
    x = vec.fit_transform(texts)
    return x, list(vec.get_feature_names_out())


def svd(x, dims: int, seed: int):
    """LSA: dims is cut to what the matrix allows (min(n, V) - 1)."""
    from sklearn.decomposition import TruncatedSVD

    dims = max(1, min(dims, min(x.shape) - 1))
    return TruncatedSVD(n_components=dims, random_state=seed).fit_transform(x).astype("float32")


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


def kmeans(emb, k: int, sample: Optional[int], seed: int) -> Tuple[Any, Any, Dict[str, Any]]:
    """(labels, centroids, facts): KMeans (Lloyd, k-means++, 4 inits) on `sample` documents drawn at
    random (all when None or >= n), then every document assigned to its nearest centroid (predict)."""
    import numpy as np
    from sklearn.cluster import KMeans

    n = len(emb)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=sample, replace=False)) if sample and sample < n else np.arange(n)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(emb[idx])
    labels = km.predict(emb)
    return labels, km.cluster_centers_, {"fitted_on": int(len(idx)), "inertia": float(km.inertia_),
                                          "iterations": int(km.n_iter_)}


def top_terms(x, terms: List[str], labels, k: int, n: int) -> List[List[str]]:
    """The n terms of highest mean TF-IDF weight in each of the k clusters."""
    import numpy as np

    out = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if not len(rows) or n == 0:
            out.append([])
            continue
        mean = np.asarray(x[rows].mean(axis=0)).ravel()
        out.append([terms[i] for i in np.argsort(-mean)[:n] if mean[i] > 0])
    return out


def map_2d(emb, seed: int):
    """2-D coordinates for the topic map: the first two principal components."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(emb)
