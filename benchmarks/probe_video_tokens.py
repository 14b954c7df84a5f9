"""Usage: python benchmarks/probe_video_tokens.py DATA_DIR FEATURE_DIR

Per-token probes: what one region token (D values) reveals, the granularity the model's video projection sees."""
import os, sys, numpy as np, torch
HERE = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, os.path.dirname(HERE)); sys.path.insert(0, HERE)
from probe_video_features import fit_probe
from avsd_dataset.synthetic import FACT_VALUES, load_ground_truth
torch.set_num_threads(1)
data_dir, feature_dir = sys.argv[1], sys.argv[2]
videos = load_ground_truth(data_dir)["videos"]
rows = {"fit": [], "test": []}
for image_id, facts in sorted(videos.items()):
    folder = "r3d_18" + ("_testset" if facts["split"] == "test" else "")
    rows["test" if facts["split"] == "test" else "fit"].append((np.load(os.path.join(feature_dir, folder, image_id + ".npy")), facts))
rng = np.random.default_rng(0)
for fact in ("place", "color", "object"):
    values = FACT_VALUES[fact]
    xs = {p: np.stack([f.mean((0, 1)) for f, _ in r]) for p, r in rows.items()}   # mean over clips and regions: [D]
    ys = {p: np.array([values.index(fa[fact]) for _, fa in r]) for p, r in rows.items()}
    print(fact, "mean-pooled token [D]:", fit_probe(xs["fit"], ys["fit"], xs["test"], ys["test"], len(values)), flush=True)
    xs = {p: np.stack([f.mean(0).max(0) for f, _ in r]) for p, r in rows.items()}   # max over regions
    print(fact, "max-pooled token [D]:", fit_probe(xs["fit"], ys["fit"], xs["test"], ys["test"], len(values)), flush=True)
values = FACT_VALUES["action"]
xs, ys = {}, {}
for p, r in rows.items():
    a, b = [], []
    for f, fa in r:
        for k, act in enumerate(fa["actions"][: len(f)]):
            region = rng.integers(f.shape[1])
            a.append(f[k, region]); b.append(values.index(act))
    xs[p], ys[p] = np.stack(a), np.array(b)
print("action, one random region token [D]:", fit_probe(xs["fit"], ys["fit"], xs["test"], ys["test"], len(values)), flush=True)
for p, r in rows.items():
    xs[p] = np.stack([f[k].mean(0) for f, fa in r for k in range(min(len(f), len(fa["actions"])))])
print("action, region-mean of a clip [D]:", fit_probe(xs["fit"], ys["fit"], xs["test"], ys["test"], len(values)), flush=True)
