"""Image classifiers trained with attention regularisers, and their own Grad-CAM."""
from paric.models.classifier import Classifier, ClassifierLoadError, build_classifier
from paric.models.cam import classifier_gradcam

__all__ = ["Classifier", "ClassifierLoadError", "build_classifier", "classifier_gradcam"]
