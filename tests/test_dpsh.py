import math

import pytest
import torch

from index_builder.dpsh import dpsh_loss


def test_dpsh_loss_by_hand():
    u = torch.tensor([[0.5, -1.0]])
    bank = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    similar = torch.tensor([[1.0, 0.0]])
    # theta = u . U_j / 2 = [(-0.5)/2, (-0.5)/2] = [-0.25, -0.25]
    t = -0.25
    likelihood = ((math.log(1 + math.exp(t)) - t) + math.log(1 + math.exp(t))) / 2
    quant = 0.1 * ((0.5 - 1) ** 2 + 0) / 2
    assert dpsh_loss(u, bank, similar, eta=0.1).item() == pytest.approx(likelihood + quant, rel=1e-6)


def test_dpsh_loss_is_stable_for_large_inner_products():
    u = torch.full((1, 32), 40.0)
    bank = torch.full((1, 32), 40.0)
    loss = dpsh_loss(u, bank, torch.ones(1, 1), eta=0.0)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # similar pair, huge agreement: no loss
