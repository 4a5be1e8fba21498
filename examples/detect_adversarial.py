"""Adversarial input detection from slices: fit on clean digits, catch FGSM and PGD inputs.

Trains a small CNN on scikit-learn's digits, fits NNSlicer's detector and the FeatureMap and
Mahalanobis baselines on the clean training digits only, attacks the test digits, and prints
each detector's precision, recall, F1 and AUROC (adversarial = positive) against the clean
sources. The detector is saved to a file that loads back without running code.

    python examples/detect_adversarial.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score  # noqa: E402

import nnslicer  # noqa: E402
from analyses.adversarial import FeatureMapDetector, MahalanobisDetector, SliceDetector, load_detector  # noqa: E402
from analyses.attacks import fgsm, pgd  # noqa: E402
from nnslicer.datasets import load_digits  # noqa: E402
from nnslicer.models import small_cnn  # noqa: E402

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = load_digits()
model = small_cnn()
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x_train, y_train, epochs=25, batch_size=64, verbose=0)

# This CNN has two conv stages: layer=-1 is the last (conv2), the library's default -2 the first.
detectors = {
    "NNSlicer (channel, forest)": SliceDetector(nnslicer.Slicer(model, granularity="channel"), layer=-1),
    "NNSlicer (element, tree: the paper)": SliceDetector(nnslicer.Slicer(model), layer=-1, classifier="tree"),
    "FeatureMap (forest)": FeatureMapDetector(model, layer=-1),
    "Mahalanobis": MahalanobisDetector(model),
}
for det in detectors.values():
    det.fit(x_train, y_train)                      # clean inputs only

attacks = [fgsm(model, x_test, y_test, eps=0.15), pgd(model, x_test, y_test, eps=0.1, step=0.02)]
print(f"{'detector':38s} {'attack':6s} {'n':>4s} {'prec':>5s} {'rec':>5s} {'F1':>5s} {'AUROC':>6s}")
for name, det in detectors.items():
    for adv in attacks:
        clean, attacked = det.detect(adv.x_clean), det.detect(adv.x_adv)   # one pass each
        truth = np.r_[np.zeros(len(adv)), np.ones(len(adv))]
        flagged = np.r_[clean.adversarial, attacked.adversarial]
        auroc = roc_auc_score(truth, -np.r_[clean.scores, attacked.scores])
        print(f"{name:38s} {adv.attack['name']:6s} {len(adv):4d} {precision_score(truth, flagged):5.2f} "
              f"{recall_score(truth, flagged):5.2f} {f1_score(truth, flagged):5.2f} {auroc:6.2f}")

det = detectors["NNSlicer (channel, forest)"]
det.save("detector.nnsd")                           # plain arrays + skops: no pickle
back = load_detector("detector.nnsd", model)        # refuses any other model
assert np.array_equal(back.predict(x_test[:20]), det.predict(x_test[:20]))
print("\nsaved and reloaded:", back)
