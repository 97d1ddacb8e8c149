import torch
from torch import nn

from bnstudy.config import DataConfig
from bnstudy.data import BatchOrder, gaussian_regression
from bnstudy.models import DLN, layer, weight_layers


def test_dln_shape_layers_and_norms():
    model = DLN(25, 10, "batch")
    assert model(torch.randn(5, 10)).shape == (5, 10)
    assert len(weight_layers(model)) == 25 and all(linear.bias is None for linear in weight_layers(model))
    assert sum(p.numel() for p in model.parameters()) == 25 * 100 + 24 * 2 * 10
    assert isinstance(model.preactivation(1), nn.BatchNorm1d) and model.preactivation(25) is layer(model, 25)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in DLN(25, 10, "none").modules())


def test_standard_dln_is_linear_in_its_input():
    model = DLN(5, 4, "none")
    x1, x2 = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(model(2 * x1 + x2), 2 * model(x1) + model(x2), atol=1e-5)


def test_gaussian_data_is_y_equals_a_x_and_paired_by_seed():
    data = gaussian_regression(DataConfig(dataset="gaussian"), 10, seed=0, device=torch.device("cpu"))
    assert data.train_x.shape == (1000, 10) and data.test_x.shape == (1000, 10)
    a = torch.linalg.lstsq(data.train_x, data.train_y).solution.T  # recover A from the data
    assert torch.allclose(data.test_y, data.test_x @ a.T, atol=1e-3)
    again = gaussian_regression(DataConfig(dataset="gaussian"), 10, seed=0, device=torch.device("cpu"))
    assert torch.equal(data.train_y, again.train_y)
    other = gaussian_regression(DataConfig(dataset="gaussian"), 10, seed=1, device=torch.device("cpu"))
    assert not torch.equal(data.train_y, other.train_y)


def test_full_batch_takes_the_data_in_order():
    order = BatchOrder(1000, 1000, seed=0)
    assert torch.equal(order.next(), torch.arange(1000)) and torch.equal(order.next(), torch.arange(1000))
