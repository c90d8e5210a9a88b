"""Pre-packed oneDNN linears give the same numbers as plain ones."""
import pytest
import torch
from torch import nn

from continuum.layers.cpu_linear import PackedLinear, pack_linears, packing_supported
from continuum.models.loader import load_model

pytestmark = pytest.mark.skipif(not packing_supported(torch.bfloat16), reason="no oneDNN bf16 on this CPU")


@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_plain(bias):
    torch.manual_seed(0)
    lin = nn.Linear(96, 200, bias=bias).to(torch.bfloat16)
    packed = PackedLinear(lin)
    for m in (1, 7, 64, 300):
        x = torch.randn(m, 96, dtype=torch.bfloat16)
        assert torch.equal(packed(x), lin(x))


def test_packed_model_logits_equal_plain_model():
    plain = load_model("random:tiny", dtype=torch.bfloat16, seed=3).model
    packed = load_model("random:tiny", dtype=torch.bfloat16, seed=3).model
    assert pack_linears(packed) == 2 * 4 + 1          # qkv, o, gate_up, down per layer + lm_head
    ids = torch.randint(0, 250, (20,))
    pos = torch.arange(20)
    with torch.no_grad():
        a = plain.compute_logits(plain(ids, pos))
        b = packed.compute_logits(packed(ids, pos))
    assert torch.equal(a, b)
