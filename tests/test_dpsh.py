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


def test_training_resumes_where_it_stopped(tmp_path, tiny_data, monkeypatch):
    """A run killed after epoch 2 and restarted ends with the same weights as one uninterrupted run."""
    import pytest as _pytest

    from index_builder import dpsh
    from retrieval.core.config import override
    from retrieval.core.model import load_checkpoint
    from testkit.data import tiny_config

    cfg = override(tiny_config(tmp_path / "a", tiny_data), train={"epochs": 3})
    dpsh.train(cfg)
    whole, _ = load_checkpoint(tmp_path / "a" / "model")

    cfg_b = override(cfg, paths={"work_dir": tmp_path / "b"})
    real_save = dpsh._save_state

    def save_then_die(cfg, module, opt, bank, epoch, model_dir):
        real_save(cfg, module, opt, bank, epoch, model_dir)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(dpsh, "_save_state", save_then_die)
    with _pytest.raises(KeyboardInterrupt):
        dpsh.train(cfg_b)
    assert (tmp_path / "b" / "model" / dpsh.STATE_FILE).is_file()
    assert not (tmp_path / "b" / "model" / "model.json").exists()  # no half model
    monkeypatch.setattr(dpsh, "_save_state", real_save)
    dpsh.train(cfg_b)
    resumed, _ = load_checkpoint(tmp_path / "b" / "model")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_is_reused_whatever_device_it_was_trained_on():
    """model.device says where the model runs, not what it is: it must not force a retrain."""
    from index_builder.dpsh import train_key
    from retrieval.core.config import Config, override

    on_cpu = train_key(override(Config(), model={"device": "cpu"}))
    assert on_cpu == train_key(override(Config(), model={"device": "cuda:1"}))
    assert on_cpu != train_key(override(Config(), model={"hash_bits": 16}))
    assert "device" not in on_cpu["model"] and "device" not in on_cpu["train"]
