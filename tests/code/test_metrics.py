from __future__ import annotations

import math

import numpy as np
import torch

from visionflow.metrics import absent_classes, confusion_matrix, segmentation_metrics


def test_confusion_matrix_leaves_out_ignore_index() -> None:
    target = torch.tensor([[0, 1, 2, 255]])
    pred = torch.tensor([[0, 2, 2, 1]])
    cm = confusion_matrix(pred, target, num_classes=3, ignore_index=255)
    expected = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]])
    assert np.array_equal(cm.numpy(), expected)


def test_metrics_by_hand() -> None:
    # class 0: tp 3, fp 1, fn 1 -> IoU 3/5; class 1: tp 2, fp 1, fn 1 -> IoU 2/4
    cm = np.array([[3, 1], [1, 2]])
    m = segmentation_metrics(cm, ["a", "b"])
    assert math.isclose(m["iou_a"], 0.6)
    assert math.isclose(m["iou_b"], 0.5)
    assert math.isclose(m["miou"], 0.55)
    assert math.isclose(m["pixel_accuracy"], 5 / 7)
    assert math.isclose(m["mean_class_accuracy"], (3 / 4 + 2 / 3) / 2)
    assert m["absent_classes"] == 0


def test_absent_class_is_reported_not_averaged() -> None:
    cm = np.array([[4, 0, 0], [0, 2, 0], [0, 0, 0]])
    m = segmentation_metrics(cm, ["a", "b", "c"])
    assert math.isnan(m["iou_c"])
    assert m["miou"] == 1.0, "c has no ground truth: it must not count as 0 or 1"
    assert m["absent_classes"] == 1
    assert absent_classes(cm, ["a", "b", "c"]) == ["c"]


def test_predicting_an_absent_class_costs_the_true_class() -> None:
    cm = np.array([[2, 0, 2], [0, 2, 0], [0, 0, 0]])  # half of a's pixels predicted as c (absent)
    m = segmentation_metrics(cm, ["a", "b", "c"])
    assert math.isclose(m["iou_a"], 0.5)
    assert math.isclose(m["miou"], 0.75)
