"""The shipped MNIST classifier: its checkpoint, accuracy, and one pass giving features and p(y | x)."""
import numpy as np
import pytest
import torch

from ldm_edu.classifier import (CLASSIFIER_PATH, ClassifierOutputs, as_features, classifier_accuracy,
                                classifier_outputs, classifier_probs, load_classifier)


def test_classifier_checkpoint_is_small_and_accurate(test_images):
    assert CLASSIFIER_PATH.exists() and CLASSIFIER_PATH.stat().st_size < 2_000_000
    x, y = test_images
    assert classifier_accuracy(x, y) >= 0.99
    clf = load_classifier()
    assert not clf.training
    assert clf.features(x[:3]).shape == (3, 128)


def test_classifier_outputs_are_features_and_probabilities_of_one_pass(test_images):
    x = test_images[0][:50]
    out = classifier_outputs(x, batch_size=16)                 # several batches, one result
    assert len(out) == 50 and out.features.shape == (50, 128) and out.probs.shape == (50, 10)
    assert out.features.dtype == np.float64 and np.allclose(out.probs.sum(1), 1)
    np.testing.assert_allclose(out.probs, classifier_probs(x).numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out.features, load_classifier().features(x).double().numpy(), rtol=1e-5, atol=1e-6)


def test_as_features_passes_features_through_and_names_bad_input(test_images):
    x = test_images[0][:8]
    out = classifier_outputs(x)
    assert as_features(out) is out.features
    np.testing.assert_array_equal(as_features(x), out.features)                   # images → one classifier pass
    f = torch.arange(6.0).view(3, 2)
    assert as_features(f).dtype == np.float64 and as_features(f).tolist() == f.tolist()
    assert isinstance(out, ClassifierOutputs)
    with pytest.raises(ValueError, match=r"ref must be MNIST images \(N, 1, 28, 28\)"):
        as_features(np.zeros(5), "ref")
    with pytest.raises(ValueError, match="NaN or inf"):
        as_features(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_features(x * 2 - 1)
