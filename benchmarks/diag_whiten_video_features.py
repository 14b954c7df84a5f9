"""Usage: python benchmarks/diag_whiten_video_features.py DATA_DIR OUTPUT_DIR GPT2_DIR (the data folder and offline GPT-2
of `python -m avsd_dataset.video_demo`, after its standardisation stage).

Diagnostic: PCA-whiten the standardised features (fitted on the training videos) and train with the demo's settings."""
import json, os, sys, numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D, OUT, GPT2 = sys.argv[1], sys.argv[2], sys.argv[3]
src, dst = f"{D}/video_features-69a1a7f994", f"{D}/video_features-whitened-diag"
train_ids = {d["image_id"] for d in json.load(open(f"{D}/train_set4DSTC7-AVSD.json"))["dialogs"]}
X = np.concatenate([np.load(f"{src}/r3d_18/{i}.npy").reshape(-1, 256) for i in sorted(train_ids)]).astype(np.float64)
mean = X.mean(0); C = np.cov(X - mean, rowvar=False); w, V = np.linalg.eigh(C)
print("eigenvalues of the standardised features (top 10, as fraction of total):", np.round(w[::-1][:10] / w.sum(), 3), "rank>1e-3:", (w > 1e-3).sum(), flush=True)
W = V / np.sqrt(w + 0.01)          # PCA whitening, eps 0.01 (mean eigenvalue 1)
for split in ("r3d_18", "r3d_18_testset"):
    os.makedirs(f"{dst}/{split}", exist_ok=True)
    for name in os.listdir(f"{src}/{split}"):
        if name.endswith(".npy"):
            a = np.load(f"{src}/{split}/{name}")
            np.save(f"{dst}/{split}/{name}", ((a.reshape(-1, 256) - mean) @ W).reshape(a.shape).astype(np.float32))
from avsd_dataset.video_demo import VideoDemoArguments, paths, training_arguments
args = VideoDemoArguments(output_dir=OUT, cache_dir=os.path.dirname(os.path.abspath(D)))
where = dict(paths(args), feature_dir=dst)
argv = training_arguments(args, where, GPT2)
print("python run_vgd.py " + " ".join(argv), flush=True)
import run_vgd
m = run_vgd.main(argv)
print(json.dumps({k: v for k, v in m.items() if "accuracy" in k}, indent=0))
