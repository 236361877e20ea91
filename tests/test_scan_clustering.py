"""SCAN's clustering step: its loss, its batches of neighbour pairs, and a real fine-tuning
that finds the two kinds of image from a noisy neighbour graph alone."""

import numpy as np
import torch

from embeddings.config import Config
from embeddings.model import AutoEncoder, ModelArgs
from embeddings.scan_clustering import plan_pairs, scan_clusters, scan_loss
from tests.test_selflabel import _bars


def test_scan_loss_rewards_agreement_and_punishes_one_cluster_for_all():
    sure = torch.full((1, 4, 2), -9.0)
    sure[0, [0, 1], 0] = sure[0, [2, 3], 1] = 9.0  # two images in each cluster, confidently
    agree, agree_cons = scan_loss(sure, sure)
    disagree, _ = scan_loss(sure, sure.flip(1))
    assert agree_cons.item() < 1e-3 and agree.item() < disagree.item()
    one = torch.full((1, 4, 2), -9.0)
    one[0, :, 0] = 9.0  # every image in cluster 0: consistent, but the entropy term objects
    collapsed, collapsed_cons = scan_loss(one, one)
    assert collapsed_cons.item() < 1e-3 and collapsed.item() > agree.item() + 3
    two_heads, _ = scan_loss(torch.cat([sure, one]), torch.cat([sure, one]))
    assert torch.allclose(two_heads, torch.cat([agree, collapsed]))


def test_plan_pairs_loads_each_image_once_and_pairs_anchors_with_their_neighbours():
    rng = np.random.default_rng(0)
    n, m = 100, 5
    neighbours = np.stack([rng.choice(np.delete(np.arange(n), i), m, replace=False) for i in range(n)])
    neighbours[7] = -1  # found none: pairs with itself
    neighbours[8, 2:] = -1  # found two
    plan = plan_pairs(neighbours, 32, epochs=2, seed=0)
    assert len(plan) == 2 * 3  # whole batches only
    anchors = []
    for ids, a, b in plan:
        assert (np.diff(ids) > 0).all() and len(a) == len(b) == 32
        for anchor, partner in zip(ids[a], ids[b]):
            assert partner == anchor if anchor == 7 else partner in neighbours[anchor][neighbours[anchor] >= 0]
        anchors.append(ids[a])
    assert len(np.unique(np.concatenate(anchors[:3]))) == 96  # a pass holds no anchor twice
    again = plan_pairs(neighbours, 32, epochs=2, seed=0)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[2], y[2]) for x, y in zip(plan, again))


def test_scan_finds_the_two_kinds_from_a_noisy_neighbour_graph(tmp_path):
    pixels, truth = _bars(tmp_path)
    rng = np.random.default_rng(0)
    same = [np.flatnonzero(truth == c) for c in (0, 1)]
    neighbours = np.stack([rng.choice(same[t], 10) for t in truth])  # same kind...
    wrong = rng.random(neighbours.shape) < 0.15  # ...but for 15% of the list
    neighbours[wrong] = rng.choice(len(truth), wrong.sum())
    torch.manual_seed(0)
    model = AutoEncoder(ModelArgs(16, 8, 8))  # untrained: SCAN learns the bars from the pairs alone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = Config(image_size=16, dim=8, width=8, batch_size=64, workers=0, lr=3e-2)
    out, consistency, encoder = scan_clusters(model, pixels, neighbours, 2, 15, cfg, torch.device("cpu"))
    assert out.shape == truth.shape and set(np.unique(out)) <= {0, 1}
    accuracy = max((out == truth).mean(), (out != truth).mean())
    assert accuracy >= 0.95, accuracy
    assert 0 <= consistency < 0.5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), model.encoder.state_dict().values()))
