from __future__ import annotations

import math

import numpy as np
import torch

from visionflow.metrics import absent_classes, confusion_matrix, per_image_scores, segmentation_metrics


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


def test_dice_precision_recall_by_hand() -> None:
    # class a: tp 3, fp 1, fn 1; class b: tp 2, fp 1, fn 1; class c: absent and never predicted
    cm = np.array([[3, 1, 0], [1, 2, 0], [0, 0, 0]])
    m = segmentation_metrics(cm, ["a", "b", "c"])
    assert math.isclose(m["dice_a"], 6 / 8) and math.isclose(m["dice_b"], 4 / 6)
    assert math.isclose(m["precision_a"], 3 / 4) and math.isclose(m["recall_b"], 2 / 3)
    assert math.isnan(m["dice_c"]) and math.isnan(m["precision_c"]) and math.isnan(m["recall_c"])
    assert math.isclose(m["mean_dice"], (6 / 8 + 4 / 6) / 2)


def test_a_class_never_predicted_has_precision_zero() -> None:
    m = segmentation_metrics(np.array([[4, 0], [2, 0]]), ["a", "b"])
    assert m["precision_b"] == 0.0 and m["recall_b"] == 0.0


def test_per_image_scores() -> None:
    target = torch.tensor([[[0, 0], [1, 1]], [[255, 255], [255, 255]]])
    pred = torch.tensor([[[0, 0], [1, 0]], [[0, 0], [0, 0]]])
    first, ignored = per_image_scores(pred, target, num_classes=2, ignore_index=255)
    assert math.isclose(first["miou"], (2 / 3 + 1 / 2) / 2) and math.isclose(first["pixel_accuracy"], 0.75)
    assert math.isnan(ignored["miou"]), "an image with every pixel ignored has no score"
