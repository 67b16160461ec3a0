import torch

from hedit.edit.scaling import input_scale, lora_factors, scale_columns_


def test_scale_columns_in_float32_then_cast():
    torch.manual_seed(0)
    w = torch.randn(8, 12).to(torch.bfloat16)
    orig = w.clone()
    scale_columns_(w, [1, 7], [0.3, 2.0])
    ref = orig.double()
    ref[:, 1] *= 0.3
    ref[:, 7] *= 2.0
    assert torch.equal(w, ref.float().to(torch.bfloat16))
    others = [j for j in range(12) if j not in (1, 7)]
    assert torch.equal(w[:, others], orig[:, others])


def test_lora_factors_product_is_the_exact_delta():
    torch.manual_seed(0)
    w = torch.randn(16, 20, dtype=torch.float64).float()
    cols, alphas = [3, 4, 19], [0.0, 1.5, 3.0]
    a, b = lora_factors(w, cols, alphas, rank=5)
    assert a.shape == (5, 20) and b.shape == (16, 5)
    assert torch.equal(a[3:], torch.zeros(2, 20)) and torch.equal(b[:, 3:], torch.zeros(16, 2))
    edited = w.clone()
    scale_columns_(edited, cols, alphas)
    assert torch.allclose(w + b @ a, edited, atol=1e-6, rtol=0)
    assert torch.equal(a.sum(1)[:3], torch.ones(3))


def test_input_scale():
    v = input_scale(6, [0, 5], [0.0, 2.5])
    assert v.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 2.5]
