import pytest
import torch

from retrieval.core.codes import pack
from retrieval.core.config import ModelConfig
from retrieval.core.model import HashNet, load_checkpoint, read_card, save_checkpoint

CFG = ModelConfig(backbone="small_cnn", hash_bits=16, image_size=32, freeze_backbone=False)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return HashNet(CFG).eval()


def test_codes_are_signs_of_relaxed_outputs(model):
    x = torch.rand(5, 3, 32, 32)
    c = model(x)
    assert c.shape == (5, 16)
    assert (model.encode(x) == pack(c)).all()


def test_normalisation_and_resize_are_inside_the_model(model):
    x = torch.rand(2, 3, 32, 32)
    by_hand = model.head(model.backbone((x - 0.5) / 0.5))
    assert torch.allclose(model(x), by_hand, atol=1e-6)
    big = torch.nn.functional.interpolate(x, size=(64, 64), mode="nearest")
    assert model(big).shape == (2, 16)  # any input size: resized to image_size inside


def test_checkpoint_round_trip_and_card(model, tmp_path):
    card = save_checkpoint(
        model, tmp_path, model.card(dataset="tiny", label_names=("a", "b"), metrics={"map@all": 0.5})
    )
    assert len(card.sha256) == 64
    assert read_card(tmp_path) == card
    loaded, loaded_card = load_checkpoint(tmp_path)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    assert loaded_card.label_names == ("a", "b")
    assert not list(tmp_path.glob("*.tmp"))


def test_tampered_weights_are_refused(model, tmp_path):
    save_checkpoint(model, tmp_path, model.card())
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path)


def test_expected_sha256_from_elsewhere_is_checked(model, tmp_path):
    save_checkpoint(model, tmp_path, model.card())
    with pytest.raises(ValueError, match="refusing"):
        load_checkpoint(tmp_path, expected_sha256="0" * 64)


def test_missing_pretrained_file_says_so():
    with pytest.raises(FileNotFoundError, match="never downloads"):
        HashNet(ModelConfig(backbone="vgg11", pretrained="/nonexistent/vgg11.pth", image_size=32))


def test_resolve_device_picks_cuda_only_when_present():
    from retrieval.core.model import resolve_device

    has_cuda = torch.cuda.is_available()
    assert resolve_device("auto") == ("cuda" if has_cuda else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not has_cuda:
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            resolve_device("cuda:0")
